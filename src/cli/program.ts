import { Command, Option } from 'commander';
import { SealmeshError, type ErrorCode } from '../errors/index.ts';
import type { Intention } from '../policy/index.ts';
import type { Instance, ServiceSummary, TokenRecord } from '../server/index.ts';
import { clientFromFlags, parseDuration, print, table, type ClientFlags } from './output.ts';
import type { runServer } from './run.ts';
import type { runProxy } from './run-proxy.ts';
import type { ApplyFlags } from '../perimeter/index.ts';
import { addOperatorCommands } from './operator-commands.ts';
import { addManifestCommands } from './manifest-commands.ts';
import { addAuditCommands } from './audit-commands.ts';
import { addSealOptions } from './seal-flags.ts';
import { addCaCustodyOptions } from './ca-flags.ts';
import { addHardeningOptions } from './hardening-options.ts';
import { addTlsKeyOptions } from './tls-key-flags.ts';

function addClientOptions(command: Command): Command {
  return command
    .option('--addr <url>', 'control-plane address (default: SEALMESH_ADDR or https://127.0.0.1:8501)')
    .option('--token <token>', 'ACL token (default: SEALMESH_TOKEN)')
    .option('--ca-file <path>', 'PEM trust bundle that the server certificate chains to (default: SEALMESH_CACERT)')
    .option('--json', 'print the result as JSON');
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Formats the PERMISSIONS cell of `intention list`: how many L7 permissions the intention contains, or `-`. */
function formatPermissionCount(entry: Intention): string {
  return entry.permissions === undefined ? '-' : `${entry.permissions.length} L7`;
}

/** Formats an instance's app exposure for `service list`: `no`, `yes (ADDRESSES)`, or `-` when its proxy has not reported it. */
function exposureCell(instance: Instance): string {
  const exposure = instance.appExposure;
  if (exposure === undefined) return '-';
  return exposure.exposed ? `yes (${exposure.bindings.join(', ')})` : 'no';
}

/** Formats an instance's evidence for `service list`: the provider with its TCB status or `INSECURE`, `unpinned` without a policy, or `-` without evidence. */
function attestationCell(instance: Instance): string {
  const attestation = instance.attestation;
  if (attestation === undefined) return '-';
  const details = [attestation.insecure ? 'INSECURE' : attestation.tcbStatus, attestation.policy === 'unpinned' ? 'unpinned' : undefined].filter((detail) => detail !== undefined);
  return details.length === 0 ? attestation.provider : `${attestation.provider} (${details.join(', ')})`;
}

/**
 * Adds the code of a bad command-line value to a usage error that commander reports itself (an
 * unknown option, a missing argument), so that it carries a code like the errors of the commands.
 * With `json` the error is written as the commands write theirs under `--json`.
 */
function withUsageCode(message: string, json: boolean): string {
  const code: ErrorCode = 'SEALMESH_ERR_CONFIG_INVALID';
  if (json) return `${JSON.stringify({ error: { code, message: message.replace(/^error: /, '').trim() } })}\n`;
  return message.endsWith('\n') ? `${message.slice(0, -1)} (${code})\n` : `${message} (${code})`;
}

/**
 * Builds the `sealmesh` command tree. Each action returns once its work is done. `json` is set when
 * the command line has `--json`, so that usage errors come as JSON too.
 */
export function buildProgram(json = false): Command {
  const program = new Command('sealmesh')
    .description('sealmesh: a service mesh built to keep keys, configuration and access policies safe from whoever can read the disk, the configuration or process memory (docs/threat-model.md says what holds today)')
    .version('0.1.0')
    .showHelpAfterError(json ? false : '(run with --help for usage)')
    .configureOutput({ outputError: (message, write) => write(withUsageCode(message, json)) });

  const server = program
    .command('server')
    .description('run the control plane: CA, catalog, intentions, ACL and watch streams')
    .option('--config <file>', 'local configuration file (YAML, or JSON for .json) with data_dir, addr, lease and log_level; flags override it')
    .option('--data-dir <dir>', 'directory for the store and the trust bundle (created with mode 0700); required here or in --config')
    .option('--addr <host:port>', 'address of the HTTPS API (default: 127.0.0.1:8501)')
    .option('--trust-domain <name>', 'trust domain of a new cluster (default: a generated one); fixed once set')
    .option('--lease <duration>', 'how long an instance stays registered after its proxy disconnects (default: 30s)')
    .option('--log-level <level>', 'log level: trace, debug, info, warn, error (default: info)')
    .option('--collateral-dir <dir>', 'directory of attestation collateral (AMD VCEKs and chains, Intel TCB info, QE identity, CRLs), tried before the services')
    .option('--pccs-url <url>', 'PCCS or Intel PCS base URL for TDX and SGX collateral; fetched documents are cached in the store until they expire')
    .option('--kds-url <url>', 'AMD KDS base URL, or a cache with its paths, for SEV-SNP VCEKs, chains and CRLs')
    .option('--collateral-ca-file <path>', 'PEM roots for an HTTPS --pccs-url or --kds-url (default: the system roots)');
  addHardeningOptions(addCaCustodyOptions(addSealOptions(server))).action(
    async (flags: Parameters<typeof runServer>[0]) => {
      // The server, proxy and dev modules load on use, so that the client commands start quickly.
      const { runServer } = await import('./run.ts');
      await runServer(flags);
    },
  );

  const operator = program.command('operator').description('cluster operations: initialisation, sealing, verification, snapshots and key rotation');
  addOperatorCommands(operator, addClientOptions);

  const manifest = program.command('manifest').description('the signed manifest that sets the security posture: operator keys, signing offline, apply, show and history');
  addManifestCommands(manifest, addClientOptions);

  const audit = program.command('audit').description('read and verify the tamper-evident audit log');
  addAuditCommands(audit, addClientOptions);

  const token = program.command('token').description('manage ACL tokens');
  addClientOptions(
    token
      .command('create')
      .description('create a token: a single-use join token for a service, or an operator or read-only token')
      .option('--service <name>', 'service a join token enrolls (NAME or NAMESPACE/NAME)')
      .addOption(new Option('--kind <kind>', 'token kind').choices(['join', 'operator', 'read']))
      .option('--ttl <duration>', 'lifetime; join tokens default to 1h and allow at most 7d')
      .option('--description <text>', 'free text shown in token lists')
      .action(async (flags: ClientFlags & { service?: string; kind?: string; ttl?: string; description?: string }) => {
        const kind = flags.kind ?? (flags.service !== undefined ? 'join' : undefined);
        if (kind === undefined) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'pass --service NAME for a join token, or --kind operator|read');
        const client = clientFromFlags(flags);
        const result = await client.post<TokenRecord & { token: string }>('/v1/acl/tokens', {
          kind,
          ...(flags.service !== undefined ? { service: flags.service } : {}),
          ...(flags.ttl !== undefined ? { ttlSeconds: parseDuration(flags.ttl, '--ttl') } : {}),
          ...(flags.description !== undefined ? { description: flags.description } : {}),
        });
        print(flags, result, () =>
          [
            `Accessor ID:  ${result.accessorId}`,
            `Kind:         ${result.kind}${result.service !== undefined ? ` (service ${result.namespace}/${result.service})` : ''}`,
            `Expires:      ${result.expiresAt ?? 'never'}`,
            `Token:        ${result.token}`,
          ].join('\n'),
        );
      }),
  );
  addClientOptions(
    token
      .command('list')
      .description('list tokens (metadata only; secrets are never stored)')
      .action(async (flags: ClientFlags) => {
        const { tokens } = await clientFromFlags(flags).get<{ tokens: TokenRecord[] }>('/v1/acl/tokens');
        print(flags, { tokens }, () =>
          table(
            ['ACCESSOR', 'KIND', 'SERVICE', 'EXPIRES', 'USED'],
            tokens.map((record) => [
              record.accessorId,
              record.kind,
              record.service !== undefined ? `${record.namespace}/${record.service}` : '-',
              record.expiresAt ?? 'never',
              record.usedAt ?? '-',
            ]),
          ),
        );
      }),
  );
  addClientOptions(
    token
      .command('delete')
      .description('revoke a token by accessor ID')
      .argument('<accessor-id>')
      .action(async (accessorId: string, flags: ClientFlags) => {
        const result = await clientFromFlags(flags).delete<{ revoked: string }>(`/v1/acl/tokens/${encodeURIComponent(accessorId)}`);
        print(flags, result, () => `Revoked token ${result.revoked}`);
      }),
  );

  const intention = program.command('intention').description('manage intentions: which service may call which');
  addClientOptions(
    intention
      .command('create')
      .description('allow or deny SRC calling DST; either may be *')
      .argument('<src>')
      .argument('<dst>')
      .option('--allow', 'allow the connection')
      .option('--deny', 'deny the connection')
      .option('--description <text>', 'free text')
      .option('--permissions-file <file>', 'YAML or JSON list of L7 permissions ({action, http}) checked in order for HTTP destinations; --allow or --deny decides requests that none matches')
      .option('--replace', 'replace an existing intention for the same pair')
      .action(async (source: string, destination: string, flags: ClientFlags & { allow?: boolean; deny?: boolean; description?: string; permissionsFile?: string; replace?: boolean }) => {
        if (flags.allow === flags.deny) throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'pass exactly one of --allow and --deny');
        const { readPermissionsFile } = await import('./permissions-file.ts');
        const permissions = flags.permissionsFile !== undefined ? readPermissionsFile(flags.permissionsFile) : undefined;
        const result = await clientFromFlags(flags).post<{ intention: Intention }>('/v1/intentions', {
          source,
          destination,
          action: flags.allow === true ? 'allow' : 'deny',
          ...(permissions !== undefined ? { permissions } : {}),
          ...(flags.description !== undefined ? { description: flags.description } : {}),
          ...(flags.replace === true ? { replace: true } : {}),
        });
        const l7 = result.intention.permissions !== undefined ? `, ${result.intention.permissions.length} L7 permissions` : '';
        print(flags, result, () => `Created: ${result.intention.source} => ${result.intention.destination} (${result.intention.action}${l7})`);
      }),
  );
  addClientOptions(
    intention
      .command('list')
      .description('list intentions in precedence order')
      .action(async (flags: ClientFlags) => {
        const { intentions } = await clientFromFlags(flags).get<{ intentions: Intention[] }>('/v1/intentions');
        const { intentionPrecedence } = await import('../policy/index.ts');
        const sorted = [...intentions].sort((a, b) => intentionPrecedence(b) - intentionPrecedence(a) || a.source.localeCompare(b.source));
        print(flags, { intentions: sorted }, () =>
          table(
            ['SOURCE', 'DESTINATION', 'ACTION', 'PERMISSIONS', 'PRECEDENCE', 'CREATED'],
            sorted.map((entry) => [entry.source, entry.destination, entry.action, formatPermissionCount(entry), String(intentionPrecedence(entry)), entry.createdAt]),
          ),
        );
      }),
  );
  addClientOptions(
    intention
      .command('delete')
      .description('delete the intention for SRC calling DST')
      .argument('<src>')
      .argument('<dst>')
      .action(async (source: string, destination: string, flags: ClientFlags) => {
        const query = new URLSearchParams({ source, destination });
        const result = await clientFromFlags(flags).delete<{ deleted: { source: string; destination: string } }>(`/v1/intentions?${query.toString()}`);
        print(flags, result, () => `Deleted: ${result.deleted.source} => ${result.deleted.destination}`);
      }),
  );

  const service = program.command('service').description('inspect the service catalog');
  addClientOptions(
    service
      .command('list')
      .description('list services and their instances')
      .action(async (flags: ClientFlags) => {
        const { services } = await clientFromFlags(flags).get<{ services: ServiceSummary[] }>('/v1/catalog/services');
        // The APP EXPOSED column is shown once any instance's proxy has reported how its app is bound.
        const showExposure = services.some((summary) => summary.instances.some((instance) => instance.appExposure !== undefined));
        // The ATTESTATION column is shown once any instance enrolled with evidence.
        const showAttestation = services.some((summary) => summary.instances.some((instance) => instance.attestation !== undefined));
        print(flags, { services }, () =>
          table(
            ['SERVICE', 'INSTANCE', 'ADDRESS', 'HEALTH', 'SPIFFE ID', 'SVID EXPIRES', ...(showExposure ? ['APP EXPOSED'] : []), ...(showAttestation ? ['ATTESTATION'] : [])],
            services.flatMap((summary) =>
              summary.instances.map((instance) => [
                summary.namespace === 'default' ? summary.name : `${summary.namespace}/${summary.name}`,
                instance.id,
                `${instance.address}:${instance.port}`,
                instance.health,
                instance.spiffeId,
                instance.svidNotAfter ?? '-',
                ...(showExposure ? [exposureCell(instance)] : []),
                ...(showAttestation ? [attestationCell(instance)] : []),
              ]),
            ),
          ),
        );
      }),
  );

  const proxy = program
    .command('proxy')
    .description('run a sidecar proxy in front of one service instance')
    .option('--config <file>', 'local configuration file (YAML, or JSON for .json) with service, listen, app, upstreams, upstream_config, advertise, admin, drain, addr, ca_file, log_level and the access_log keys; flags override it')
    .option('--service <name>', 'service this proxy fronts (NAME or NAMESPACE/NAME); required here or in --config')
    .option('--join-token <token>', 'single-use join token for the service (default: SEALMESH_JOIN_TOKEN)')
    .option('--listen <host:port>', 'inbound mTLS listener; required here or in --config')
    .option('--app <host:port|unix:path>', 'the local app that inbound traffic goes to: loopback TCP or a Unix socket; required here or in --config')
    .option('--upstream <name=host:port|name=unix:path>', 'loopback TCP or Unix socket listener for an upstream service; repeatable', collect, [])
    .option('--protocol <protocol>', 'application protocol of the app: tcp, http (HTTP/1.1), http2 (cleartext HTTP/2) or grpc; registered for the callers\' proxies (default: tcp)')
    .option('--upstream-config <name:key=value>', 'traffic setting of an upstream (NAME or * for all), such as api:load_balancer=least_request or api:limits.max_connections=100; repeatable, see docs/traffic.md', collect, [])
    .option('--advertise <host:port>', 'address other proxies dial (default: the --listen address)')
    .option('--admin <host:port|unix:path>', 'loopback TCP or Unix socket endpoint for /metrics, /ready and /status')
    .option('--socket-mode <octal>', 'permission bits of every Unix socket the proxy creates; no bit for other users is accepted', '0600')
    .option('--socket-owner <user>', 'owner of those sockets, a name or uid (default: the proxy\'s user; changing it needs root)')
    .option('--socket-group <group>', 'group of those sockets, a name or gid (default: the proxy\'s primary group)')
    .option('--health <host:port>', 'plain HTTP endpoint serving GET /healthz for the orchestrator\'s prober')
    .option('--app-health-path <path>', 'HTTP path the app is checked at, such as /healthz (default: a TCP or Unix socket connect)')
    .option('--manifest-genesis <digest>', 'SHA-256 digest of the genesis manifest to pin (`sealmesh manifest show`); default: the first one received')
    .option('--svid-ttl <duration>', 'requested SVID lifetime (default: the server\'s)')
    .option('--attestation <mode>', 'evidence to enroll with: auto (detect configfs-tsm or Gramine /dev/attestation), sev-snp, tdx, sgx, dev (INSECURE software evidence) or none', 'auto')
    .option('--dev-measurement <hex>', 'with --attestation dev: the 48-byte measurement (96 hex digits) that the dev evidence claims')
    .option('--drain <duration>', 'how long SIGTERM waits for open connections (default: 10s)')
    .option('--addr <url>', 'control-plane address (default: SEALMESH_ADDR or https://127.0.0.1:8501)')
    .option('--ca-file <path>', 'PEM trust bundle of the control plane (default: SEALMESH_CACERT)')
    .option('--log-level <level>', 'log level: trace, debug, info, warn, error (default: info)')
    .option('--access-log', 'write a JSON line per HTTP request; requests the proxy answers itself are always written')
    .option('--no-access-log', 'write no access log, even when --config enables it')
    .option('--access-log-sampling <rate>', 'share of requests written to the access log, from 0 to 1 (default: 1)')
    .option('--access-log-path <file>', 'append the access log to this file (default: standard output)')
    .option('--access-log-query', 'keep query strings in the access log (default: dropped, because they often carry secrets)');
  addHardeningOptions(addTlsKeyOptions(proxy)).action(async (flags: Parameters<typeof runProxy>[0]) => {
    const { runProxy } = await import('./run-proxy.ts');
    await runProxy(flags);
  });

  const perimeter = program.command('perimeter').description('nftables rules around an app and its sidecar in the app\'s network namespace (needs root)');
  perimeter
    .command('apply')
    .description('install or replace table inet sealmesh: only the proxy\'s user connects to the app port, and the app\'s user opens TCP connections only to mesh ports')
    .requiredOption('--netns <name>', 'network namespace of the app, as `ip netns list` shows it')
    .requiredOption('--app-port <port>', 'TCP port the app listens on')
    .requiredOption('--proxy-user <user>', 'user the proxy runs as, a name or uid')
    .requiredOption('--app-user <user>', 'user the app runs as, a name or uid')
    .option('--upstream-port <port...>', 'port of an upstream listener of the proxy that the app may connect to; repeatable')
    .option('--proxy-port <port...>', 'other port of the proxy that the app may connect to, such as the admin endpoint; repeatable')
    .option('--dry-run', 'print the nft script without loading it')
    .option('--json', 'print the result as JSON')
    .action(async (flags: ApplyFlags & { json?: boolean }) => {
      const { runPerimeterApply } = await import('../perimeter/index.ts');
      const result = await runPerimeterApply(flags);
      print(flags, result, () => (result.applied ? `Applied the perimeter in network namespace ${result.netns}:\n\n${result.ruleset.trimEnd()}` : result.ruleset.trimEnd()));
    });
  perimeter
    .command('check')
    .description('read table inet sealmesh back from the namespace and report what it enforces, or that nothing is installed')
    .requiredOption('--netns <name>', 'network namespace of the app')
    .option('--json', 'print the result as JSON')
    .action(async (flags: { netns: string; json?: boolean }) => {
      const { formatPerimeterStatus, runPerimeterCheck } = await import('../perimeter/index.ts');
      const status = await runPerimeterCheck(flags);
      print(flags, status, () => formatPerimeterStatus(status));
    });
  perimeter
    .command('remove')
    .description('delete table inet sealmesh from the namespace; succeeds when none is installed')
    .requiredOption('--netns <name>', 'network namespace of the app')
    .option('--json', 'print the result as JSON')
    .action(async (flags: { netns: string; json?: boolean }) => {
      const { runPerimeterRemove } = await import('../perimeter/index.ts');
      const result = await runPerimeterRemove(flags);
      print(flags, result, () => `Removed the perimeter from network namespace ${result.netns}`);
    });

  program
    .command('dev')
    .description('run a throwaway dev mesh: a server and three demo services behind proxies (not for production)')
    .option('--port <port>', 'control-plane port (default: 8501, or a free port when it is taken)')
    .action(async (flags: { port?: string }) => {
      const { runDev } = await import('../dev/index.ts');
      await runDev(flags);
    });

  return program;
}
