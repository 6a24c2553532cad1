import { randomBytes } from 'node:crypto';

/**
 * A short per-run prefix for every kernel object a test creates (netns, links, bridges, chains, tables).
 * 'ft' + 4 hex chars = 6 chars, leaving 9 for the rest of an interface name (IFNAMSIZ 15).
 */
export function runPrefix(): string {
  return 'ft' + randomBytes(2).toString('hex');
}
