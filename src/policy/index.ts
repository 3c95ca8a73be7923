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
