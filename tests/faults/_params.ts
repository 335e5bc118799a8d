// Campaign sizes and the seed, from COIL_FAULTS_* variables with CI defaults that meet the issue's
// minimums, so that a longer soak or a replay needs no code change.

/** Default seed: fixed, so that CI runs the same sequence of choices every time. */
const DEFAULT_SEED = 20261126;

/**
 * A positive integer from the variable `name`, else `fallback`.
 * @throws {Error} when the variable is set to anything but a positive integer.
 */
export function envCount(name: string, fallback: number): number {
  const text = Deno.env.get(name);
  if (text === undefined || text === "") return fallback;
  if (!/^[1-9][0-9]{0,8}$/.test(text)) {
    throw new Error(`Invalid ${name} "${text}": expected a positive integer`);
  }
  return Number(text);
}

/**
 * The seed of one campaign: COIL_FAULTS_SEED when set (to replay a run), else a fixed default mixed
 * with the campaign's name so that campaigns do not share a sequence.
 */
export function campaignSeed(campaign: string): number {
  const text = Deno.env.get("COIL_FAULTS_SEED");
  if (text !== undefined && text !== "") {
    if (!/^[0-9]{1,10}$/.test(text) || Number(text) > 0xffffffff) {
      throw new Error(`Invalid COIL_FAULTS_SEED "${text}": expected an integer from 0 to 4294967295`);
    }
    return Number(text);
  }
  let hash = DEFAULT_SEED;
  for (const c of campaign) hash = (Math.imul(hash, 31) + c.charCodeAt(0)) >>> 0;
  return hash;
}
