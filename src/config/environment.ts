import { SealmeshError } from '../errors/index.ts';
import { closestName, isSecuritySettingName } from './names.ts';

/**
 * The SEALMESH_* environment variables that sealmesh reads. Any other variable with the prefix is
 * an error, so that a misspelt variable is reported and a security setting cannot be slipped in
 * through the environment.
 */
export const KNOWN_ENVIRONMENT_VARIABLES = [
  'SEALMESH_ADDR',
  'SEALMESH_TOKEN',
  'SEALMESH_CACERT',
  'SEALMESH_JOIN_TOKEN',
  'SEALMESH_LOG_LEVEL',
  'SEALMESH_SEAL_PASSPHRASE',
  'SEALMESH_NEW_SEAL_PASSPHRASE',
  'SEALMESH_SEAL_KEY_FILE',
  'SEALMESH_PKCS11_PIN',
  'SEALMESH_CA_PKCS11_PIN',
  'SEALMESH_TLS_KEY_PKCS11_PIN',
  'SEALMESH_EXIT_WITH_PARENT',
  'SEALMESH_TEST_LOG',
] as const;

const PREFIX = 'SEALMESH_';

/**
 * Checks the names of the SEALMESH_* variables in `env`; values are never read or shown. Throws:
 * - SEALMESH_ERR_CONFIG_SECURITY_SETTING when a variable names a security setting, such as
 *   SEALMESH_DEFAULT_POLICY or SEALMESH_ACL_ENABLED;
 * - SEALMESH_ERR_CONFIG_UNKNOWN_KEY for any other variable outside KNOWN_ENVIRONMENT_VARIABLES,
 *   with the closest known name when one is near.
 * Every offending name is listed, security settings first.
 */
export function checkEnvironment(env: Readonly<Record<string, string | undefined>> = process.env): void {
  const known = new Set<string>(KNOWN_ENVIRONMENT_VARIABLES);
  const unknown = Object.keys(env)
    .filter((name) => name.startsWith(PREFIX) && !known.has(name))
    .sort();
  const security = unknown.filter((name) => isSecuritySettingName(name.slice(PREFIX.length)));
  if (security.length > 0) {
    const single = security.length === 1;
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_SECURITY_SETTING',
      `environment variable${single ? '' : 's'} ${security.join(', ')} ${single ? 'names a security setting' : 'name security settings'}, which only the signed manifest may set. Unset ${single ? 'it' : 'them'} and change the manifest with \`sealmesh manifest\``,
    );
  }
  if (unknown.length > 0) {
    const described = unknown.map((name) => {
      const suggestion = closestName(name, KNOWN_ENVIRONMENT_VARIABLES);
      return suggestion === undefined ? name : `${name} (did you mean ${suggestion}?)`;
    });
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_UNKNOWN_KEY',
      `unknown environment variable${unknown.length === 1 ? '' : 's'} ${described.join(', ')}; sealmesh reads only ${KNOWN_ENVIRONMENT_VARIABLES.join(', ')}`,
    );
  }
}

/**
 * Throws SEALMESH_ERR_CONFIG_SECURITY_SETTING when a command-line flag, given with or without its
 * leading dashes, names a security setting. Commander already rejects unknown flags, so this only
 * keeps security settings out of the flags that a command defines or that a user passes.
 */
export function checkFlagName(name: string): void {
  const flag = `--${name.replace(/^-+/, '')}`;
  if (isSecuritySettingName(flag)) {
    throw new SealmeshError(
      'SEALMESH_ERR_CONFIG_SECURITY_SETTING',
      `flag ${flag} names a security setting, which only the signed manifest may set. Change the manifest with \`sealmesh manifest\` instead`,
    );
  }
}
