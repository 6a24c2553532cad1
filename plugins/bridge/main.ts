// Placeholder until the bridge plugin lands; replaced by its owner.
import { CniError, type PluginHandlers } from '../../lib/cni/types.ts';

const notYet = (): never => {
  throw new CniError(7, 'bridge: not implemented yet');
};

export const handlers: PluginHandlers = {
  add: async () => notYet(),
  del: async () => notYet(),
  check: async () => notYet(),
};
