export {
  decide,
  intentionPrecedence,
  normaliseIntentionEnds,
  DEFAULT_POLICY,
  type Intention,
  type IntentionAction,
  type DefaultPolicy,
  type Decision,
} from './intentions.ts';
export {
  decideRequest,
  compilePermissions,
  loadPermissionsSchema,
  preparePermissionsSchema,
  HTTP_METHODS,
  type Permission,
  type HttpMatch,
  type HeaderMatch,
  type RequestFacts,
  type PermissionDecision,
} from './permissions.ts';
export { normaliseRequestPath, type NormalisedPath, type PathRejection } from './path.ts';
