// Proof that secrets stay secret: every output a campaign collected (logs, CLI output, CNI answers,
// HTTP bodies) is searched for each secret as written and in the forms a leak usually takes: JSON
// string escaping (a log field), base64 (an encoded buffer or header), URL encoding (a URL in a
// message), and for a PEM key each line of its body (a key file echoed in part).

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";

/** One collected output, named for the failure message (e.g. "coild log after etcd restart"). */
export interface Output {
  name: string;
  text: string;
}

/** A secret and a label that names it without showing it (e.g. "the etcd password"). */
export interface Secret {
  label: string;
  value: string;
}

/** What assertNoSecrets() looked at. */
export interface ScanFigures {
  outputs: number;
  bytes: number;
  /** Distinct needles searched for (every form of every secret). */
  needles: number;
}

/** The shortest needle searched: a shorter base64 fragment would match innocent text. */
const MIN_NEEDLE = 12;

/**
 * The forms in which `value` may appear inside a longer text: itself, JSON-escaped, URL-encoded and
 * base64 (standard and URL-safe) at each of the three alignments a longer encoded buffer can give it.
 */
export function secretForms(value: string): string[] {
  const forms = new Set([value, JSON.stringify(value).slice(1, -1), encodeURIComponent(value)]);
  const bytes = new TextEncoder().encode(value);
  for (let shift = 0; shift < 3; shift++) {
    const encoded = Buffer.from([...new Uint8Array(shift), ...bytes]).toString("base64");
    // The 4-character groups that hold a neighbour's bits differ inside a longer text: drop them.
    const stable = encoded.slice(shift === 0 ? 0 : 4, -4);
    forms.add(stable);
    forms.add(stable.replaceAll("+", "-").replaceAll("/", "_"));
  }
  return [...forms].filter((form) => form.length >= MIN_NEEDLE);
}

/**
 * The secrets inside a PEM private key: each line of its base64 body (a message quoting part of the
 * file shows whole lines) and the body joined (a message that dropped the line breaks).
 */
export function pemKeySecrets(label: string, pem: string): Secret[] {
  const body = pem.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("-----"));
  assert.ok(body.length > 0, `${label} has no PEM body`);
  return [
    { label: `${label} (whole body)`, value: body.join("") },
    ...body.map((line, i) => ({ label: `${label} (body line ${i + 1})`, value: line })),
  ];
}

/**
 * Asserts that no form of any secret occurs in any output.
 * @returns the figures of the scan, for the campaign's report.
 * @throws {AssertionError} naming the output, the secret's label and the form, never the secret.
 */
export function assertNoSecrets(outputs: Output[], secrets: Secret[]): ScanFigures {
  const needles = secrets.flatMap((secret) =>
    secretForms(secret.value).map((form, i) => ({ label: secret.label, form: i, text: form }))
  );
  assert.ok(needles.length > 0, "no secret to search for");
  const leaks: string[] = [];
  let bytes = 0;
  for (const output of outputs) {
    bytes += new TextEncoder().encode(output.text).length;
    for (const needle of needles) {
      const at = output.text.indexOf(needle.text);
      if (at >= 0) leaks.push(`${output.name}: ${needle.label} (form ${needle.form}) at offset ${at}`);
    }
  }
  assert.deepEqual(leaks, [], `secrets leaked:\n${leaks.join("\n")}`);
  return { outputs: outputs.length, bytes, needles: new Set(needles.map((n) => n.text)).size };
}
