// The install manifest: every file, symlink and directory `coil install` created, so that
// `coil uninstall` removes exactly those. Paths are as on the node (without the staging root).

/** What an entry is for: uninstall removes the conflist first and the executable last. */
export type Role = "conflist" | "unit" | "environment" | "daemon-link" | "executable";

export type ManifestEntry =
  | { role: Role; type: "file"; path: string }
  | { role: Role; type: "symlink"; path: string; target: string };

export interface Manifest {
  entries: ManifestEntry[];
  /** Directories install created, parents first; uninstall removes them when empty. */
  dirs: string[];
}

const FORMAT = 1;
const ROLES: readonly Role[] = ["conflist", "unit", "environment", "daemon-link", "executable"];

export function renderManifest(manifest: Manifest): string {
  return JSON.stringify({ format: FORMAT, entries: manifest.entries, dirs: manifest.dirs }, null, 2) + "\n";
}

/**
 * Parses a manifest file's text, copying only known fields.
 * @throws {Error} naming `path` and what is wrong, so that uninstall removes nothing on a bad manifest.
 */
export function parseManifest(text: string, path: string): Manifest {
  const bad = (why: string): never => {
    throw new Error(`Install manifest ${path} is not one coil install wrote: ${why}`);
  };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    bad((err as Error).message);
  }
  if (!isRecord(raw) || raw.format !== FORMAT) bad(`expected an object with "format": ${FORMAT}`);
  const { entries, dirs } = raw as Record<string, unknown>;
  if (!Array.isArray(entries) || !Array.isArray(dirs)) bad("expected arrays entries and dirs");
  const absolute = (p: unknown): p is string =>
    typeof p === "string" && p.startsWith("/") && !p.split("/").includes("..");
  const parsed: ManifestEntry[] = (entries as unknown[]).map((entry, i) => {
    if (!isRecord(entry) || !absolute(entry.path) || !ROLES.includes(entry.role as Role)) {
      return bad(`entries[${i}] needs an absolute path and a role`);
    }
    const base = { role: entry.role as Role, path: entry.path };
    if (entry.type === "file") return { ...base, type: "file" };
    if (entry.type === "symlink" && typeof entry.target === "string") {
      return { ...base, type: "symlink", target: entry.target };
    }
    return bad(`entries[${i}] is neither a file nor a symlink with a target`);
  });
  if (!(dirs as unknown[]).every(absolute)) bad("dirs must be absolute paths");
  return { entries: parsed, dirs: dirs as string[] };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The manifest at `full` (the staging root applied), or undefined when there is none.
 * @throws {Error} when it exists but cannot be read or parsed.
 */
export async function readManifest(full: string): Promise<Manifest | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(full);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`Cannot read install manifest ${full}: ${(err as Error).message}`, { cause: err });
  }
  return parseManifest(text, full);
}
