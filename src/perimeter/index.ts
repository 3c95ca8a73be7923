export { classifyAddress, parseSocketTable, readListeningSockets, checkAppExposure, type AppExposure, type BindScope, type ListeningSocket } from './socket-table.ts';
export { checkTcpAppExposure, describeExposure, formatBinding, isLoopbackHost, type ExposureReport, type PerimeterMode } from './exposure.ts';
export {
  checkSocketAncestors,
  checkSocketDirectory,
  checkSocketMode,
  DEFAULT_SOCKET_MODE,
  formatMode,
  listenUnix,
  parseSocketMode,
  removeStaleSocket,
  type SocketPermissions,
  type UnixSocketListener,
} from './unix-socket.ts';
export { buildPerimeterRuleset, buildRemovalScript, parsePerimeterTable, validatePerimeterSpec, PERIMETER_TABLE, type PerimeterRule, type PerimeterSpec, type PerimeterStatus } from './nftables.ts';
export { applyPerimeter, checkNetnsName, findPerimeterTools, loadScript, readPerimeter, removePerimeter, NETNS_RUN_DIR, type NetnsOptions, type PerimeterTools } from './netns.ts';
export { resolveGroupId, resolveUserId } from './users.ts';
export { formatPerimeterStatus, perimeterSpecFromFlags, runPerimeterApply, runPerimeterCheck, runPerimeterRemove, type ApplyFlags } from './commands.ts';
