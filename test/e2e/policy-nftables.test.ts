// The NetworkPolicy scenarios of policy.test.ts with flatnet's nftables proxy backend doing the Service DNAT.
process.env.FLATNET_PROXY_MODE = 'nftables';
await import('./policy.test.ts');
