// Deno FFI onto libmnl (netlink sockets) and libc (setns, file and socket calls, errno), opened on
// first use so that importing this module costs nothing. Calls are synchronous: nonblocking FFI calls
// are ~1000× slower, and setns() must run on the JS thread itself.

const MNL_SYMBOLS = {
  mnl_socket_open2: { parameters: ["i32", "i32"], result: "pointer" },
  mnl_socket_bind: { parameters: ["pointer", "u32", "i32"], result: "i32" },
  mnl_socket_get_portid: { parameters: ["pointer"], result: "u32" },
  mnl_socket_get_fd: { parameters: ["pointer"], result: "i32" },
  mnl_socket_setsockopt: { parameters: ["pointer", "i32", "buffer", "u32"], result: "i32" },
  mnl_socket_sendto: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  mnl_socket_recvfrom: { parameters: ["pointer", "buffer", "usize"], result: "isize" },
  mnl_socket_close: { parameters: ["pointer"], result: "i32" },
} as const;

const LIBC_SYMBOLS = {
  setns: { parameters: ["i32", "i32"], result: "i32" },
  // open() is variadic; passing only (path, flags) is fine on the x86-64 and arm64 ABIs.
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // ioctl() is variadic too; declared for requests that take no argument (NS_GET_NSTYPE).
  ioctl: { parameters: ["i32", "u64"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;
export const AT_EMPTY_PATH = 0x1000;
export const SOCK_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const SOL_SOCKET = 1;
export const SO_RCVBUFFORCE = 33;
export const SO_RCVTIMEO = 20;

let mnlLib: Deno.DynamicLibrary<typeof MNL_SYMBOLS> | undefined;
let libcLib: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | undefined;

/** libmnl's socket functions (libmnl.so.0, Debian package libmnl0). */
export function mnl(): Deno.DynamicLibrary<typeof MNL_SYMBOLS>["symbols"] {
  mnlLib ??= Deno.dlopen("libmnl.so.0", MNL_SYMBOLS);
  return mnlLib.symbols;
}

/** The few libc functions netlink needs. */
export function libc(): Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"] {
  libcLib ??= Deno.dlopen("libc.so.6", LIBC_SYMBOLS);
  return libcLib.symbols;
}

/** errno of the last failed libc call on this thread; read it right after the call. */
export function lastErrno(): number {
  const location = libc().__errno_location();
  return location === null ? 0 : new Deno.UnsafePointerView(location).getInt32();
}

/** A NUL-terminated copy of `text`, for char* parameters. */
export function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
