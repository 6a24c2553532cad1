export declare const DAEMON_BUNDLE: string;
export declare function bundleDaemon(outfile?: string, opts?: { minify?: boolean; quiet?: boolean }): Promise<string>;
