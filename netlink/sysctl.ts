// Kernel parameters under /proc/sys, read and written through libc (see procfs.ts for why). A net.*
// parameter belongs to the network namespace of the thread that opens it, so these calls work inside
// withNetns().

import { NetlinkError } from "./errors.ts";
import { cString, lastErrno, libc, O_CLOEXEC, O_WRONLY } from "./ffi.ts";
import { readProcFile } from "./procfs.ts";

/**
 * `/proc/sys/…` for a name in sysctl(8)'s form: `net.ipv4.ip_forward`, or with slashes when a part
 * holds a dot (`net/ipv6/conf/eth0.100/forwarding`).
 */
function sysctlPath(name: string): string {
  return `/proc/sys/${name.includes("/") ? name : name.replaceAll(".", "/")}`;
}

/** The parameter's value without the trailing newline. @throws {NetlinkError} e.g. ENOENT when absent. */
export function readSysctl(name: string): string {
  return readProcFile(sysctlPath(name), `sysctl ${name}`).replace(/\n$/, "");
}

/** Sets the parameter, e.g. `writeSysctl("net.ipv4.ip_forward", "1")`. @throws {NetlinkError} */
export function writeSysctl(name: string, value: string): void {
  const fd = libc().open(cString(sysctlPath(name)), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw new NetlinkError({ op: "write", object: `sysctl ${name}` }, lastErrno());
  try {
    // One write from offset 0: the kernel's handlers parse the value from a single call.
    const data = new TextEncoder().encode(`${value}\n`);
    const n = Number(libc().write(fd, data, BigInt(data.length)));
    if (n < 0) throw new NetlinkError({ op: "write", object: `sysctl ${name}` }, lastErrno());
  } finally {
    libc().close(fd);
  }
}
