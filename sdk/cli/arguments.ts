// Parsers for CLI arguments and option values, so a bad value is refused by name before anything
// connects anywhere (the fuzz corpus, test/fuzz, found ids and filters that went to Temporal as
// they were).

import { runIdProblem } from '../../artifacts/keys';
import { UsageError } from './usage-error';

/** A run id argument or option (`wait ID`, `--id ID`): one store-safe name (artifacts/keys.ts runIdProblem). */
export function runIdArgument(what: string) {
  return (v: string): string => {
    const problem = runIdProblem(v);
    if (problem) throw new UsageError(`${what} ${JSON.stringify(v.length > 80 ? `${v.slice(0, 80)}…` : v)} cannot be used: ${problem}`);
    return v;
  };
}

/** A number option in [min, max] (an integer when `integer`). */
export function numberArgument(name: string, min: number, max: number, integer: boolean) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new UsageError(`${name}: expected ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got "${v}"`);
    }
    return n;
  };
}

/** One of `choices`, matched without regard to case and returned as the choice is spelt. */
export function choiceArgument<T extends string>(name: string, choices: readonly T[]) {
  return (v: string): T => {
    const hit = choices.find((c) => c.toLowerCase() === v.toLowerCase());
    if (!hit) throw new UsageError(`${name}: expected one of ${choices.join(', ')}, got "${v}"`);
    return hit;
  };
}
