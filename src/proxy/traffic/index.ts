export {
  DEFAULT_TRAFFIC_SETTINGS,
  LOAD_BALANCER_POLICIES,
  RETRY_CAUSES,
  resolveTrafficSettings,
  type LoadBalancerPolicy,
  type PassiveHealthCheck,
  type RetryCause,
  type RetrySettings,
  type TrafficLimits,
  type TrafficSettings,
  type TrafficSettingsInput,
} from './upstream-settings.ts';
export { applyUpstreamTraffic, mergeTrafficInputs, parseTrafficFlag, readTrafficConfig, readUpstreamConfig, trafficSettingKeys, type TrafficFlag, type UpstreamConfig } from './config.ts';
export { systemClock, type Clock, type RandomSource } from './clock.ts';
export { LeastRequestBalancer, RoundRobinBalancer, createLoadBalancer, type LoadBalancer } from './load-balancer.ts';
export { OutlierDetector, type Ejection, type EjectionCause, type OutlierEvents } from './outlier-detection.ts';
export { RetryBudget, backoffDelayMs, decideRetry, type RetryDecision, type RetryDenial, type RetryRequest } from './retry.ts';
export { CircuitBreaker, type BreakerResource, type BreakerTrip, type CircuitBreakerReason } from './breaker.ts';
export { TrafficMetrics, type TrafficGaugeSource } from './metrics.ts';
export { UpstreamTraffic, type Admission, type Attempt, type TrafficRejection, type UpstreamTrafficOptions, type UpstreamTrafficStatus } from './upstream-traffic.ts';
