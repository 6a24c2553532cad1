// Daemon faults for npm run test:faults (see faults.ts).
import type { FaultRow } from './faults.ts';

export async function runDaemonFaults(_args: string[]): Promise<{ when: string; commit: string; rows: FaultRow[]; notes: string[] }> {
  return { when: new Date().toISOString(), commit: '', rows: [], notes: ['not run'] };
}
