// Graph input/output names of the StepRunner contract (engine/runtime/step-runner.ts).

export const paramIn = (name: string) => `param:${name}`;
export const paramOut = (name: string) => `param_out:${name}`;
export const stateIn = (key: string) => `state:${key}`;
export const stateOut = (key: string) => `state_out:${key}`;
export const stateKey = (param: string, slot: string) => `${param}.${slot}`;
/** The state key of the flat buffer of `slot` (engine/optim/flat.ts): `state:@flat.<slot>`. */
export const flatStateKey = (slot: string) => `@flat.${slot}`;
export const FLAT_KEY_PREFIX = '@flat.';
