import type { Command } from 'commander';
import type { AuditEntry, AuditVerification } from '../audit/index.ts';
import { SealmeshError } from '../errors/index.ts';
import { clientFromFlags, print, table, type ClientFlags } from './output.ts';

/** Adds `audit list` and `audit verify`, which read the server's audit log with an operator token. */
export function addAuditCommands(audit: Command, addClientOptions: (command: Command) => Command): void {
  addClientOptions(
    audit
      .command('list')
      .description('list audit entries in order: who did what, and when')
      .option('--since <time>', 'only entries at or after this ISO 8601 time, such as 2026-01-31T00:00:00Z')
      .action(async (flags: ClientFlags & { since?: string }) => {
        let path = '/v1/audit';
        if (flags.since !== undefined) {
          if (Number.isNaN(Date.parse(flags.since))) {
            throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--since ${JSON.stringify(flags.since)} is not an ISO 8601 time; use a form such as 2026-01-31T00:00:00Z`);
          }
          path += `?${new URLSearchParams({ since: new Date(flags.since).toISOString() }).toString()}`;
        }
        const { entries } = await clientFromFlags(flags).get<{ entries: AuditEntry[] }>(path);
        print(flags, { entries }, () =>
          table(
            ['SEQ', 'TIME', 'ACTION', 'ACTOR', 'SUBJECT', 'CODE'],
            entries.map((entry) => [String(entry.seq), entry.at, entry.action, `${entry.actor.kind}:${entry.actor.accessorId}`, entry.subject ?? '-', rejectionCode(entry)]),
          ),
        );
      }),
  );

  addClientOptions(
    audit
      .command('verify')
      .description('check the hash chain of the audit log; exits 1 and names the first broken entry when it fails')
      .action(async (flags: ClientFlags) => {
        const { verification } = await clientFromFlags(flags).post<{ verification: AuditVerification }>('/v1/audit/verify', {});
        if (!verification.ok) {
          throw new SealmeshError(verification.code, `audit entry ${verification.seq} failed verification: ${verification.message}`);
        }
        print(flags, verification, () => `OK: ${verification.count} audit entries verified; head hash ${verification.headHash ?? '(empty log)'}.`);
      }),
  );
}

/** Returns the error code that a rejection entry such as `manifest.reject` records, or `-` for other entries. */
function rejectionCode(entry: AuditEntry): string {
  const code = entry.details?.code;
  return typeof code === 'string' ? code : '-';
}
