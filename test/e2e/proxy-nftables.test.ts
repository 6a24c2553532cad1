// The service-proxy scenarios of proxy.test.ts, run against flatnet's nftables backend (both backends pass the
// same end-to-end suite). The e2e sequencer runs this file first, so the files that name no mode reuse its cluster.
process.env.FLATNET_PROXY_MODE = 'nftables';
await import('./proxy.test.ts');
