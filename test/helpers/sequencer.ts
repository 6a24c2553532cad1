import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * Orders test files by name, except that files pinned to the nftables proxy run first. Files that name no proxy mode
 * reuse whatever cluster is running, so the e2e tier brings up a cluster once per mode instead of once per switch.
 */
export class TierSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => (/-nftables\.test\.ts$/.test(f.moduleId) ? 0 : 1);
    return [...files].sort((a, b) => rank(a) - rank(b) || a.moduleId.localeCompare(b.moduleId));
  }
}
