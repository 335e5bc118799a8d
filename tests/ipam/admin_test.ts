// The admin CLI as operators run it: `scripts/coil …` as a separate process against a real etcd,
// with block and address records written by hand where coild would write them.

import assert from "node:assert/strict";
import type { Etcd3 } from "etcd3";
import { parseCidr, parseIp } from "../../ipam/cidr.ts";
import { connectEtcd } from "../../ipam/etcd_client.ts";
import { keysFor } from "../../ipam/keys.ts";
import type { AddressRecord, BlockRecord, NodeRecord } from "../../ipam/records.ts";
import { assertCliOk, type CliRun, runCoilCli as coil } from "../helpers/coil_cli.ts";
import { freePort, startEtcd } from "../helpers/etcd.ts";

/** Exit code and a single `coil: …` line on stderr, no stack trace. */
function assertFails(run: CliRun, code: 1 | 2, message: RegExp): void {
  assert.equal(run.code, code, `exit ${run.code}, stdout: ${run.stdout}, stderr: ${run.stderr}`);
  assert.match(run.stderr, /^coil: [^\n]+\n$/, `one line on stderr: ${JSON.stringify(run.stderr)}`);
  assert.doesNotMatch(run.stderr, /\bat .*\.(ts|js):\d+/, "no stack trace");
  assert.match(run.stderr, message);
}

async function putBlock(client: Etcd3, prefix: string, pool: string, block: string, node: string) {
  const record: BlockRecord = { node, pool, claimedAt: "2025-01-02T03:04:05Z" };
  await client.put(keysFor(prefix).block(pool, parseCidr(block))).value(JSON.stringify(record));
}

async function putAddress(
  client: Etcd3,
  prefix: string,
  block: string,
  ip: string,
  record: Partial<AddressRecord>,
) {
  const full: AddressRecord = {
    network: "k8s-pod-network",
    containerId: "c0ffee",
    ifName: "eth0",
    podNamespace: "ns1",
    podName: "web-0",
    podUid: "uid-0",
    netns: "/var/run/netns/cni-0",
    node: "node1",
    pool: "default",
    createdAt: "2025-01-02T03:04:06Z",
    ...record,
  };
  await client.put(keysFor(prefix).address(parseCidr(block), parseIp(ip))).value(JSON.stringify(full));
}

Deno.test("coil admin CLI against a real etcd", async (t) => {
  await using etcd = await startEtcd();
  const client = await connectEtcd({ endpoints: [etcd.endpoint], prefix: "/" });
  const envFor = (prefix: string) => ({ COIL_ETCD_ENDPOINTS: etcd.endpoint, COIL_ETCD_PREFIX: prefix });
  try {
    await t.step("coil pool create/list/show/add-subnet/delete manage a pool", async () => {
      const env = envFor(etcd.newPrefix());
      const created = assertCliOk(await coil(["pool", "create", "default", "10.1.0.0/16", "FD00::/48"], env));
      assert.equal(
        created,
        'Created pool "default": 10.1.0.0/16, fd00::/48 in blocks of 32 addresses, 30 for IPv4 pods and 31 for IPv6 pods (/27 and /123)\n',
      );
      assertCliOk(await coil(["pool", "create", "dmz", "203.0.113.0/24", "--block-size-bits", "2"], env));

      const list = assertCliOk(await coil(["pool", "list"], env));
      assert.equal(
        list,
        "NAME     BLOCK-SIZE-BITS  SUBNETS\n" +
          "default  5                10.1.0.0/16, fd00::/48\n" +
          "dmz      2                203.0.113.0/24\n",
      );

      const added = assertCliOk(await coil(["pool", "add-subnet", "dmz", "198.51.100.0/24"], env));
      assert.match(
        added,
        /^Added 198\.51\.100\.0\/24 to pool "dmz": 203\.0\.113\.0\/24, 198\.51\.100\.0\/24 in blocks of 4 addresses, 2 for IPv4 pods \(\/30\)$/m,
      );

      const show = assertCliOk(await coil(["pool", "show", "dmz"], env));
      assert.match(show, /^Pool: +dmz$/m);
      assert.match(show, /^Block size: +2\^2 = 4 addresses, 2 for IPv4 pods$/m);
      assert.match(show, /^Blocks: +0 claimed of 128$/m);
      assert.match(show, /^203\.0\.113\.0\/24 +\/30 +0\/64 +0\/128$/m);
      assert.match(show, /^198\.51\.100\.0\/24 +\/30 +0\/64 +0\/128$/m);

      assert.equal(assertCliOk(await coil(["pool", "delete", "dmz"], env)), 'Deleted pool "dmz"\n');
      const after = JSON.parse(assertCliOk(await coil(["pool", "list", "--json"], env)));
      assert.deepEqual(after, [{ name: "default", subnets: ["10.1.0.0/16", "fd00::/48"], blockSizeBits: 5 }]);
      assertFails(await coil(["pool", "show", "dmz"], env), 1, /^coil: Pool "dmz" not found$/m);
      assertFails(await coil(["pool", "delete", "dmz"], env), 1, /^coil: Pool "dmz" not found$/m);
    });

    await t.step("coil pool create refuses a subnet overlapping another pool's", async () => {
      const env = envFor(etcd.newPrefix());
      assertCliOk(await coil(["pool", "create", "a", "10.1.0.0/16"], env));
      assertFails(
        await coil(["pool", "create", "b", "10.2.0.0/16", "10.1.128.0/17"], env),
        1,
        /^coil: Cannot create pool "b": subnet 10\.1\.128\.0\/17 overlaps 10\.1\.0\.0\/16 of pool "a"$/m,
      );
      assertFails(
        await coil(["pool", "add-subnet", "a", "10.0.0.0/8"], env),
        1,
        /^coil: Cannot add subnet 10\.0\.0\.0\/8 to pool "a": it overlaps 10\.1\.0\.0\/16 of that pool$/m,
      );
      assertFails(await coil(["pool", "create", "a", "10.3.0.0/16"], env), 1, /pool "a": it already exists/);
      assert.deepEqual(JSON.parse(assertCliOk(await coil(["pool", "list", "--json"], env))).length, 1);
    });

    await t.step("coil pool delete is refused while a block of the pool holds an address", async () => {
      const prefix = etcd.newPrefix();
      const env = envFor(prefix);
      assertCliOk(await coil(["pool", "create", "default", "10.1.0.0/16"], env));
      await putBlock(client, prefix, "default", "10.1.0.32/27", "node1");
      await putAddress(client, prefix, "10.1.0.32/27", "10.1.0.33", {});
      assertFails(
        await coil(["pool", "delete", "default"], env),
        1,
        /^coil: Cannot delete pool "default": 1 block\(s\) still hold addresses, claimed by node1; /m,
      );
      assert.equal(JSON.parse(assertCliOk(await coil(["pool", "list", "--json"], env))).length, 1);
      await client.delete().prefix(keysFor(prefix).addresses());
      assertCliOk(await coil(["pool", "delete", "default"], env));
      assert.deepEqual(
        await client.getAll().prefix(keysFor(prefix).blocks()).keys(),
        [],
        "the empty block went too",
      );
    });

    await t.step("coil ip show reports the AddressRecord holding an address, or why it is free", async () => {
      const prefix = etcd.newPrefix();
      const env = envFor(prefix);
      assertCliOk(await coil(["pool", "create", "default", "10.1.0.0/16", "fd00::/48"], env));
      await putBlock(client, prefix, "default", "10.1.0.32/27", "node1");
      await putBlock(client, prefix, "default", "fd00::40/123", "node2");
      await putAddress(client, prefix, "10.1.0.32/27", "10.1.0.33", { podName: "web-1", podUid: "uid-1" });
      await putAddress(client, prefix, "fd00::40/123", "fd00::45", { node: "node2", containerId: "beef" });

      const shown = assertCliOk(await coil(["ip", "show", "10.1.0.33"], env));
      assert.match(shown, /^Address: +10\.1\.0\.33$/m);
      assert.match(shown, /^Block: +10\.1\.0\.32\/27, claimed by node "node1"$/m);
      assert.match(shown, /^Pod: +ns1\/web-1 \(uid uid-1\)$/m);
      assert.match(shown, /^Container: +c0ffee$/m);
      assert.match(shown, /^Netns: +\/var\/run\/netns\/cni-0$/m);

      // A non-canonical spelling finds the same key.
      const json = JSON.parse(assertCliOk(await coil(["ip", "show", "FD00:0::45", "--json"], env)));
      assert.equal(json.address, "fd00::45");
      assert.equal(json.allocated, true);
      assert.equal(json.block, "fd00::40/123");
      assert.equal(json.blockOwner, "node2");
      assert.equal(json.record.containerId, "beef");

      assert.equal(
        assertCliOk(await coil(["ip", "show", "10.1.0.34"], env)),
        '10.1.0.34 is not allocated: block 10.1.0.32/27 of pool "default" is claimed by node "node1"\n',
      );
      assert.equal(
        assertCliOk(await coil(["ip", "show", "10.1.0.99"], env)),
        '10.1.0.99 is not allocated: block 10.1.0.96/27 of pool "default" is not claimed by any node\n',
      );
      assert.equal(
        assertCliOk(await coil(["ip", "show", "10.9.0.1"], env)),
        "10.9.0.1 is not allocated: it is in no pool\n",
      );
      const free = JSON.parse(assertCliOk(await coil(["ip", "show", "10.9.0.1", "--json"], env)));
      assert.deepEqual(free, {
        address: "10.9.0.1",
        allocated: false,
        pool: null,
        block: null,
        blockOwner: null,
        record: null,
      });
      assertFails(
        await coil(["ip", "show", "10.1.0.033"], env),
        1,
        /^coil: Invalid IP address "10\.1\.0\.033"$/m,
      );
    });

    await t.step("coil node blocks, pool show and status count blocks and addresses", async () => {
      const prefix = etcd.newPrefix();
      const env = envFor(prefix);
      assertCliOk(await coil(["pool", "create", "default", "10.1.0.0/16"], env));
      assertCliOk(await coil(["pool", "create", "dmz", "203.0.113.0/24", "--block-size-bits", "2"], env));
      await putBlock(client, prefix, "default", "10.1.0.0/27", "node1");
      await putBlock(client, prefix, "default", "10.1.0.32/27", "node2");
      await putBlock(client, prefix, "dmz", "203.0.113.4/30", "node1");
      for (const ip of ["10.1.0.1", "10.1.0.2", "10.1.0.3"]) {
        await putAddress(client, prefix, "10.1.0.0/27", ip, {});
      }
      await putAddress(client, prefix, "203.0.113.4/30", "203.0.113.5", { pool: "dmz" });
      // An address outside every claimed block: reported, not counted.
      await putAddress(client, prefix, "10.1.1.0/27", "10.1.1.1", {});
      const node3: NodeRecord = { node: "node3", startedAt: "2025-01-02T00:00:00Z", version: "0.1.0" };
      await client.put(keysFor(prefix).node("node3")).value(JSON.stringify(node3));

      const blocks = assertCliOk(await coil(["node", "blocks", "node1"], env));
      assert.match(blocks, /^default +10\.1\.0\.0\/27 +3\/30 +2025-01-02T03:04:05Z$/m);
      assert.match(blocks, /^dmz +203\.0\.113\.4\/30 +1\/2 /m);
      const blocksJson = JSON.parse(assertCliOk(await coil(["node", "blocks", "node1", "--json"], env)));
      assert.deepEqual(blocksJson, {
        node: "node1",
        live: false,
        exported: ["10.1.0.0/27", "203.0.113.4/30"],
        pools: [
          {
            pool: "default",
            blocks: [{
              block: "10.1.0.0/27",
              addressesUsed: 3,
              addresses: 30,
              claimedAt: "2025-01-02T03:04:05Z",
            }],
          },
          {
            pool: "dmz",
            blocks: [{
              block: "203.0.113.4/30",
              addressesUsed: 1,
              addresses: 2,
              claimedAt: "2025-01-02T03:04:05Z",
            }],
          },
        ],
      });
      assert.match(
        assertCliOk(await coil(["node", "blocks", "node9"], env)),
        /^Node "node9" holds no blocks/,
      );

      const show = JSON.parse(assertCliOk(await coil(["pool", "show", "default", "--json"], env)));
      assert.equal(show.blocksClaimed, 2);
      assert.equal(show.blocksTotal, "2048");
      assert.equal(show.addressesUsed, 3);
      // A block's first address (the pods' gateway) and an IPv4 block's last (their broadcast address)
      // are reserved: a /27 serves 30 pods.
      assert.equal(show.addressesInClaimedBlocks, 60);
      assert.deepEqual(show.subnets, [
        {
          subnet: "10.1.0.0/16",
          blockPrefix: 27,
          blocksClaimed: 2,
          blocksTotal: "2048",
          addressesUsed: 3,
          addresses: String(2048 * 30),
        },
      ]);

      const status = JSON.parse(assertCliOk(await coil(["status", "--json"], env)));
      assert.deepEqual(
        status.pools.map((p: { name: string; addressesUsed: number }) => [p.name, p.addressesUsed]),
        [
          ["default", 3],
          ["dmz", 1],
        ],
      );
      assert.deepEqual(status.nodes, [
        { node: "node1", live: false, blocks: 2, addressesUsed: 4, capacity: 30 + 2 },
        { node: "node2", live: false, blocks: 1, addressesUsed: 0, capacity: 30 },
        { node: "node3", live: true, blocks: 0, addressesUsed: 0, capacity: 0 },
      ]);
      assert.equal(status.strayAddresses, 1);
      const human = assertCliOk(await coil(["status"], env));
      assert.match(human, /^default +1 +5 +2\/2048 +3\/60 +5%$/m);
      assert.match(human, /^node1 +not running +2 +4\/32 +13%$/m);
      assert.match(human, /^node3 +running +0 +0\/0 +-$/m);
      assert.match(human, /^Warning: 1 address record\(s\) lie outside every claimed block$/m);
    });

    await t.step("coil reads the etcd flags, with flags winning over COIL_ETCD_* variables", async () => {
      const prefix = etcd.newPrefix();
      // The variables point at nothing: the command only works if the flags override them.
      const wrongEnv = {
        COIL_ETCD_ENDPOINTS: `http://127.0.0.1:${freePort()}`,
        COIL_ETCD_PREFIX: "/elsewhere/",
      };
      const flags = ["--etcd-endpoints", `${etcd.endpoint},${etcd.endpoint}`, "--etcd-prefix", prefix];
      assertCliOk(await coil(["pool", "create", "default", "10.1.0.0/16", ...flags], wrongEnv));
      const viaEnv = JSON.parse(assertCliOk(await coil(["pool", "list", "--json"], envFor(prefix))));
      assert.deepEqual(viaEnv.map((p: { name: string }) => p.name), ["default"]);
      const elsewhere = JSON.parse(
        assertCliOk(
          await coil(["pool", "list", "--json", "--etcd-prefix", etcd.newPrefix()], envFor(prefix)),
        ),
      );
      assert.deepEqual(elsewhere, []);
    });

    await t.step("coil fails with a clear message, without hanging, when etcd is unreachable", async (t) => {
      await t.step("connection refused", async () => {
        const port = freePort();
        assertFails(
          await coil(["pool", "list", "--etcd-endpoints", `http://127.0.0.1:${port}`]),
          1,
          new RegExp(`^coil: Cannot reach etcd at http://127\\.0\\.0\\.1:${port}: connect ECONNREFUSED`),
        );
      });
      await t.step("a server that never answers", async () => {
        // Accepts connections and sends nothing: only the call deadline can end the command.
        using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
        const held: Deno.Conn[] = [];
        const accepting = (async () => {
          try {
            for await (const conn of listener) held.push(conn);
          } catch { /* listener closed */ }
        })();
        const { port } = listener.addr as Deno.NetAddr;
        try {
          assertFails(
            await coil(["status", "--etcd-timeout", "1000"], {
              COIL_ETCD_ENDPOINTS: `http://127.0.0.1:${port}`,
            }),
            1,
            /^coil: Cannot reach etcd at http:\/\/127\.0\.0\.1:\d+: no answer within 1000 ms$/m,
          );
        } finally {
          listener.close();
          await accepting;
          for (const conn of held) conn.close();
        }
      });
    });
  } finally {
    client.close();
  }
});

Deno.test("coil validates input before contacting etcd", async (t) => {
  // Nothing listens here: each failure below must come from validation, not from etcd.
  const env = { COIL_ETCD_ENDPOINTS: `http://127.0.0.1:${freePort()}` };
  const cases: [string, string[], RegExp][] = [
    [
      "a malformed CIDR",
      ["pool", "create", "a", "10.1.0.0/33"],
      /^coil: Invalid pool "a": subnet "10\.1\.0\.0\/33" is not a CIDR/,
    ],
    [
      "host bits",
      ["pool", "create", "a", "10.1.2.0/16"],
      /subnet "10\.1\.2\.0\/16" has host bits set, did you mean "10\.1\.0\.0\/16"\?$/m,
    ],
    [
      "an octal-looking octet",
      ["pool", "create", "a", "010.1.0.0/16"],
      /subnet "010\.1\.0\.0\/16" is not a CIDR/,
    ],
    ["a bad pool name", ["pool", "create", "Web", "10.1.0.0/16"], /^coil: Invalid pool name "Web": /],
    [
      "a prefix length as block size",
      ["pool", "create", "a", "10.1.0.0/16", "--block-size-bits", "27"],
      /blockSizeBits 27 is too large/,
    ],
    [
      "single-address blocks, whose one address would be the reserved gateway",
      ["pool", "create", "a", "10.1.0.0/16", "--block-size-bits", "0"],
      /blockSizeBits 0 is too small: at least 1 \(2 addresses per block\)/,
    ],
    [
      "overlapping subnets",
      ["pool", "create", "a", "10.1.0.0/16", "10.1.0.0/24"],
      /subnet 10\.1\.0\.0\/24 overlaps 10\.1\.0\.0\/16/,
    ],
    ["a bad address", ["ip", "show", "1..2.3"], /^coil: Invalid IP address "1\.\.2\.3"$/m],
  ];
  for (const [what, args, message] of cases) {
    await t.step(`${what}: exit 1`, async () => assertFails(await coil(args, env), 1, message));
  }
});

Deno.test("coil reports usage errors with exit 2", async (t) => {
  const cases: [string, string[], Record<string, string>, RegExp][] = [
    ["unknown option", ["pool", "list", "--bogus"], {}, /^coil: unknown option '--bogus' \(see --help\)$/m],
    [
      "unknown command",
      ["pool", "creat"],
      {},
      /^coil: unknown command 'creat' \(Did you mean create\?\) \(see --help\)$/m,
    ],
    ["missing argument", ["pool", "show"], {}, /^coil: missing required argument 'name'/],
    [
      "bad block size",
      ["pool", "create", "a", "10.1.0.0/16", "--block-size-bits", "five"],
      {},
      /"five" is not a whole number/,
    ],
    [
      "bad endpoint",
      ["status", "--etcd-endpoints", "127.0.0.1:2379"],
      {},
      /"127\.0\.0\.1:2379" is not an http:\/\/, https:\/\/ or unix:\/\/ URL/,
    ],
    ["bad prefix", ["status", "--etcd-prefix", "coil"], {}, /"coil" must start and end with "\/"/],
    [
      "bad timeout from the environment",
      ["status"],
      { COIL_ETCD_TIMEOUT: "0" },
      /from env 'COIL_ETCD_TIMEOUT' is invalid/,
    ],
    [
      "certificate without key",
      ["status", "--etcd-tls-ca", "/ca.pem", "--etcd-tls-cert", "/c.pem"],
      {},
      /--etcd-tls-cert and --etcd-tls-key must be given together/,
    ],
  ];
  for (const [what, args, env, message] of cases) {
    await t.step(what, async () => assertFails(await coil(args, env), 2, message));
  }
  await t.step("no command: help on stderr", async () => {
    const run = await coil([]);
    assert.equal(run.code, 2);
    assert.equal(run.stdout, "");
    assert.match(run.stderr, /^Usage: coil /);
  });
});

Deno.test("coil --help describes every command, the daemon and the etcd flags", async (t) => {
  await t.step("top level", async () => {
    const help = assertCliOk(await coil(["--help"]));
    for (const command of ["pool", "node", "ip", "status", "coil daemon"]) {
      assert.match(help, new RegExp(`^ +${command} `, "m"), command);
    }
    assert.match(help, /coil daemon --help/);
    assert.match(help, /COIL_ETCD_\*/);
  });
  const leaves = [
    ["pool", "create"],
    ["pool", "add-subnet"],
    ["pool", "list"],
    ["pool", "show"],
    ["pool", "delete"],
    ["node", "blocks"],
    ["ip", "show"],
    ["status"],
  ];
  for (const leaf of leaves) {
    await t.step(leaf.join(" "), async () => {
      const help = assertCliOk(await coil([...leaf, "--help"]));
      assert.match(help, new RegExp(`^Usage: coil ${leaf.join(" ")} `));
      for (
        const flag of [
          "endpoints",
          "prefix",
          "tls-ca",
          "tls-cert",
          "tls-key",
          "username",
          "password",
          "timeout",
        ]
      ) {
        assert.match(help, new RegExp(`--etcd-${flag} <`), flag);
        assert.match(help, new RegExp(`env:\\s+COIL_ETCD_${flag.toUpperCase().replace("-", "_")}\\)`), flag);
      }
    });
  }
  await t.step("help for a group lists its commands", async () => {
    const help = assertCliOk(await coil(["pool", "--help"]));
    for (const command of ["create", "add-subnet", "list", "show", "delete"]) {
      assert.match(help, new RegExp(`^ +${command} `, "m"), command);
    }
  });
});
