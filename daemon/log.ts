// Structured logs: one JSON object per line on stderr, so journald and log shippers need no parser.

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFields = Record<string, unknown>;
export type Logger = (level: LogLevel, msg: string, fields?: LogFields) => void;

/** A logger writing JSON lines to stderr; `debug` lines only when `verbose`. */
export function createLogger(options: { verbose?: boolean } = {}): Logger {
  const encoder = new TextEncoder();
  return (level, msg, fields = {}) => {
    if (level === "debug" && !options.verbose) return;
    const line = JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }, jsonSafe);
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  };
}

// BigInt values (addresses, offsets) have no JSON form; log them as decimal strings.
function jsonSafe(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return value.message;
  return value;
}
