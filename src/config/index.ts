export {
  LOG_LEVELS,
  allowedLocalConfigKeys,
  isLoopback,
  loadLocalConfig,
  parseLocalConfig,
  type LocalConfigByProgram,
  type LocalConfigProgram,
  type LogLevel,
  type ProxyLocalConfig,
  type ServerLocalConfig,
} from './local.ts';
export { KNOWN_ENVIRONMENT_VARIABLES, checkEnvironment, checkFlagName } from './environment.ts';
export { closestName, isSecuritySettingName, nameWords } from './names.ts';
