import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { Option, type Command } from 'commander';
import { SealmeshError } from '../errors/index.ts';
import type { EffectivePosture, OperatorKeyAlgorithm, SignedManifest } from '../manifest/index.ts';
import { clientFromFlags, print, table, type ClientFlags } from './output.ts';

/** Reads a public key file for `manifest init`, naming the file when it cannot be read. */
function readPublicKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (cause) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `cannot read operator public key ${path}: ${(cause as NodeJS.ErrnoException).code ?? String(cause)}`, { cause });
  }
}

function parseThreshold(value: string): number {
  const threshold = Number(value);
  if (!Number.isInteger(threshold) || threshold < 1) {
    throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', `--threshold ${JSON.stringify(value)} must be a whole number of at least 1`);
  }
  return threshold;
}

/**
 * Adds the manifest commands. keygen, init, next, sign and verify work offline on files, so each
 * operator can sign on their own machine. apply, show and history call the server.
 */
export function addManifestCommands(manifest: Command, addClientOptions: (command: Command) => Command): void {
  manifest
    .command('keygen')
    .description('generate an operator signing key: the private key goes to FILE (mode 0600), the public key to FILE.pub and standard output')
    .requiredOption('--out <file>', 'path of the new private key; it must not exist')
    .addOption(new Option('--algorithm <name>', 'key algorithm').choices(['ed25519', 'ecdsa-p256']).default('ed25519'))
    .option('--pkcs11-module <path>', 'generate a non-extractable ECDSA P-256 key in a PKCS#11 token instead; only FILE.pub is written (PIN: SEALMESH_PKCS11_PIN)')
    .option('--pkcs11-token <label>', 'label of the token')
    .option('--pkcs11-key-label <label>', 'label of the new key pair in the token')
    .option('--json', 'print the result as JSON')
    .action(async (flags: { out: string; algorithm: OperatorKeyAlgorithm; pkcs11Module?: string; pkcs11Token?: string; pkcs11KeyLabel?: string; json?: boolean }) => {
      const { generateOperatorKey, Pkcs11ManifestSigner } = await import('../manifest/index.ts');
      if (flags.pkcs11Module !== undefined) {
        const pin = process.env.SEALMESH_PKCS11_PIN;
        if (flags.pkcs11Token === undefined || flags.pkcs11KeyLabel === undefined || pin === undefined || pin === '') {
          throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'generating a PKCS#11 key needs --pkcs11-token, --pkcs11-key-label and the PIN in SEALMESH_PKCS11_PIN');
        }
        const signer = Pkcs11ManifestSigner.generate({ module: flags.pkcs11Module, tokenLabel: flags.pkcs11Token, keyLabel: flags.pkcs11KeyLabel, pin });
        try {
          writeFileSync(`${flags.out}.pub`, signer.publicKeyPem, { mode: 0o644, flag: 'wx' });
          const result = { keyId: signer.keyId, algorithm: signer.algorithm, publicKeyPem: signer.publicKeyPem, publicKeyFile: `${flags.out}.pub`, token: flags.pkcs11Token, keyLabel: flags.pkcs11KeyLabel };
          print(flags, result, () => `${signer.publicKeyPem.trimEnd()}\n\nKey ID:       ${signer.keyId}\nPrivate key:  in token ${flags.pkcs11Token} as ${flags.pkcs11KeyLabel} (not extractable)\nPublic key:   ${flags.out}.pub`);
        } finally {
          signer.close();
        }
        return;
      }
      const key = generateOperatorKey(flags.algorithm);
      // The flag wx fails when the file exists, so an existing key is never overwritten.
      for (const path of [flags.out, `${flags.out}.pub`]) {
        if (existsSync(path)) throw new SealmeshError('SEALMESH_ERR_CONFLICT', `${path} already exists; keygen never overwrites a key, so choose another --out`);
      }
      writeFileSync(flags.out, key.privateKeyPem, { mode: 0o600, flag: 'wx' });
      writeFileSync(`${flags.out}.pub`, key.publicKeyPem, { mode: 0o644, flag: 'wx' });
      const result = { keyId: key.keyId, algorithm: key.algorithm, publicKeyPem: key.publicKeyPem, privateKeyFile: flags.out, publicKeyFile: `${flags.out}.pub` };
      print(flags, result, () => `${key.publicKeyPem.trimEnd()}\n\nKey ID:       ${key.keyId}\nPrivate key:  ${flags.out} (keep it offline; it is never sent to the server)\nPublic key:   ${flags.out}.pub`);
    });

  manifest
    .command('init')
    .description('create the unsigned version 1 of a cluster\'s manifest from the operators\' public keys')
    .requiredOption('--operator-key <file...>', 'public key file of an operator, as written by `manifest keygen`; give one per operator')
    .requiredOption('--threshold <m>', 'how many operator signatures each manifest version needs')
    .requiredOption('--trust-domain <name>', 'trust domain of the server, as `GET /v1/status` reports it')
    .addOption(new Option('--default-policy <policy>', 'what happens to a connection that no intention matches').choices(['deny', 'allow']).default('deny'))
    .requiredOption('--out <file>', 'path of the new manifest; .json writes JSON, any other extension YAML')
    .option('--json', 'print the result as JSON')
    .action(async (flags: { operatorKey: string[]; threshold: string; trustDomain: string; defaultPolicy: 'deny' | 'allow'; out: string; json?: boolean }) => {
      const { initManifest, manifestDigest, writeSignedManifestFile } = await import('../manifest/index.ts');
      const document = initManifest({
        trustDomain: flags.trustDomain,
        operatorKeys: flags.operatorKey.map((path) => ({ publicKeyPem: readPublicKeyFile(path) })),
        threshold: parseThreshold(flags.threshold),
        defaultPolicy: flags.defaultPolicy,
      });
      await writeSignedManifestFile(flags.out, document);
      const result = { file: flags.out, version: 1, digest: manifestDigest(document.manifest) };
      print(flags, result, () => `Wrote unsigned manifest version 1 to ${flags.out} (digest ${result.digest}). Each operator now signs it with \`sealmesh manifest sign\`.`);
    });

  manifest
    .command('next')
    .description('create the unsigned next version of CURRENT: version + 1, naming CURRENT\'s digest as previous; edit it, then sign it')
    .argument('<current>', 'the current signed manifest, as `manifest history --json` or the applied file has it')
    .requiredOption('--out <file>', 'path of the new manifest')
    .option('--json', 'print the result as JSON')
    .action(async (currentFile: string, flags: { out: string; json?: boolean }) => {
      const { nextManifest, readSignedManifestFile, writeSignedManifestFile } = await import('../manifest/index.ts');
      const next = nextManifest(await readSignedManifestFile(currentFile), {});
      await writeSignedManifestFile(flags.out, next);
      const result = { file: flags.out, version: next.manifest.version, previous: next.manifest.previous };
      print(flags, result, () => `Wrote unsigned manifest version ${result.version} to ${flags.out}. Edit its settings, then collect signatures with \`sealmesh manifest sign\`.`);
    });

  manifest
    .command('sign')
    .description('add your signature to a manifest file in place; works offline')
    .argument('<file>', 'manifest file')
    .option('--key <file>', 'your private key file, as written by `manifest keygen` (mode 0600)')
    .option('--pkcs11-module <path>', 'sign with a key in a PKCS#11 token instead: the module, such as /usr/lib/softhsm/libsofthsm2.so (PIN: SEALMESH_PKCS11_PIN)')
    .option('--pkcs11-token <label>', 'label of the token holding the operator key')
    .option('--pkcs11-key-label <label>', 'label of the operator key pair in the token')
    .option('--key-id <id>', 'key id to sign as (default: the id derived from the public key)')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, flags: { key?: string; pkcs11Module?: string; pkcs11Token?: string; pkcs11KeyLabel?: string; keyId?: string; json?: boolean }) => {
      const { FileManifestSigner, Pkcs11ManifestSigner, readSignedManifestFile, signManifest, writeSignedManifestFile } = await import('../manifest/index.ts');
      const keyId = flags.keyId === undefined ? {} : { keyId: flags.keyId };
      let signer: import('../manifest/index.ts').ManifestSigner;
      let close = (): void => undefined;
      if (flags.pkcs11Module !== undefined) {
        const pin = process.env.SEALMESH_PKCS11_PIN;
        if (flags.pkcs11Token === undefined || flags.pkcs11KeyLabel === undefined || pin === undefined || pin === '') {
          throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'signing with a PKCS#11 key needs --pkcs11-token, --pkcs11-key-label and the PIN in SEALMESH_PKCS11_PIN');
        }
        const tokenSigner = Pkcs11ManifestSigner.open({ module: flags.pkcs11Module, tokenLabel: flags.pkcs11Token, keyLabel: flags.pkcs11KeyLabel, pin, ...keyId });
        signer = tokenSigner;
        close = () => tokenSigner.close();
      } else if (flags.key !== undefined) {
        signer = await FileManifestSigner.fromFile(flags.key, keyId);
      } else {
        throw new SealmeshError('SEALMESH_ERR_CONFIG_INVALID', 'pass --key FILE, or --pkcs11-module with --pkcs11-token and --pkcs11-key-label');
      }
      let signed;
      try {
        signed = await signManifest(await readSignedManifestFile(file), signer);
      } finally {
        close();
      }
      await writeSignedManifestFile(file, signed);
      const result = { file, version: signed.manifest.version, keyId: signer.keyId, signatures: signed.signatures.length };
      print(flags, result, () => `Signed manifest version ${result.version} as ${signer.keyId}; ${file} now carries ${result.signatures} signature(s).`);
    });

  manifest
    .command('verify')
    .description('check a manifest offline: its schema and signatures, and with --current whether it may replace that manifest')
    .argument('<file>', 'manifest file')
    .option('--current <file>', 'the manifest it is to replace; without it FILE must be a version 1 signed by its own operators')
    .option('--json', 'print the result as JSON')
    .action(async (file: string, flags: { current?: string; json?: boolean }) => {
      const { acceptManifest, readSignedManifestFile } = await import('../manifest/index.ts');
      const current = flags.current === undefined ? undefined : await readSignedManifestFile(flags.current);
      const accepted = acceptManifest(await readSignedManifestFile(file), current);
      const result = { ok: true, version: accepted.manifest.version, digest: accepted.digest, approvedBy: accepted.approvedBy };
      print(flags, result, () =>
        [
          `OK: manifest version ${result.version} (digest ${result.digest}) is approved by ${result.approvedBy.join(', ')}.`,
          ...(current === undefined ? ['A server accepts version 1 only as its first manifest; compare the digest with the one the other operators expect.'] : []),
        ].join('\n'),
      );
    });

  addClientOptions(
    manifest
      .command('apply')
      .description('send a signed manifest to the server, which accepts it only as the next link of its chain')
      .argument('<file>', 'signed manifest file'),
  ).action(async (file: string, flags: ClientFlags) => {
    const { readSignedManifestFile } = await import('../manifest/index.ts');
    const document = await readSignedManifestFile(file);
    const result = await clientFromFlags(flags).post<{ version: number; digest: string; approvedBy: string[] }>('/v1/manifest', document);
    print(flags, result, () => `Applied manifest version ${result.version} (digest ${result.digest}), approved by ${result.approvedBy.join(', ')}.`);
  });

  addClientOptions(
    manifest.command('show').description('show the effective security posture of the applied manifest'),
  ).action(async (flags: ClientFlags) => {
    const { formatPosture } = await import('../manifest/index.ts');
    const result = await clientFromFlags(flags).get<{
      manifest: { version: number; digest: string } | null;
      genesisDigest: string | null;
      posture: EffectivePosture | null;
      proxies: Array<{ instanceId: string; service: string; manifest: { version: number; digest: string } | null }>;
    }>('/v1/manifest');
    const proxies = table(
      ['SERVICE', 'INSTANCE', 'ENFORCED VERSION', 'DIGEST'],
      result.proxies.map((entry) => [entry.service, entry.instanceId, entry.manifest === null ? 'none' : String(entry.manifest.version), entry.manifest?.digest ?? '-']),
    );
    print(flags, result, () =>
      result.posture === null
        ? `No manifest is applied: the server runs with default policy deny and intentions managed through the API. Create one with \`sealmesh manifest init\`.\n\n${proxies}`
        : `${formatPosture(result.posture).trimEnd()}\ngenesis:  ${result.genesisDigest ?? '-'}\nnote:     the TLS settings are signed but not yet enforced by the server\n\n${proxies}`,
    );
  });

  addClientOptions(
    manifest.command('history').description('list every applied manifest version, oldest first'),
  ).action(async (flags: ClientFlags) => {
    const { manifestDigest } = await import('../manifest/index.ts');
    const { chain } = await clientFromFlags(flags).get<{ chain: SignedManifest[] }>('/v1/manifest/history');
    print(flags, { chain }, () =>
      table(
        ['VERSION', 'DIGEST', 'PREVIOUS', 'SIGNED BY'],
        chain.map((document) => [
          String(document.manifest.version),
          manifestDigest(document.manifest),
          document.manifest.previous ?? '-',
          document.signatures.map((signature) => signature.keyId).join(', '),
        ]),
      ),
    );
  });
}
