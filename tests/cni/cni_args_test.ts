import assert from "node:assert/strict";
import { cniArgsProblem, parseCniArgs } from "../../cni/cni_args.ts";
import { CniError } from "../../cni/errors.ts";

const EMPTY = { podNamespace: "", podName: "", podInfraContainerId: "", podUid: "" };

Deno.test("parseCniArgs() reads containerd's CNI_ARGS", () => {
  const args = parseCniArgs(
    "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1",
  );
  assert.deepEqual(args, {
    podNamespace: "ns1",
    podName: "web-0",
    podInfraContainerId: "abc123",
    podUid: "u-1",
  });
});

Deno.test("parseCniArgs() gives empty fields for an empty string and for absent keys (podman)", () => {
  assert.deepEqual(parseCniArgs(""), EMPTY);
  assert.deepEqual(parseCniArgs("K8S_POD_NAME=web-0"), { ...EMPTY, podName: "web-0" });
});

Deno.test("parseCniArgs() ignores unknown keys only with IgnoreUnknown 1 or true, in any case", async (t) => {
  for (const value of ["1", "true", "TRUE", "True"]) {
    await t.step(`IgnoreUnknown=${value}`, () => {
      assert.deepEqual(parseCniArgs(`FOO=bar;IgnoreUnknown=${value};K8S_POD_NAME=p`), {
        ...EMPTY,
        podName: "p",
      });
    });
  }
});

Deno.test("parseCniArgs() accepts empty values and a key repeated with the same value", () => {
  assert.deepEqual(parseCniArgs("K8S_POD_NAMESPACE=;K8S_POD_NAME=p;K8S_POD_NAME=p"), {
    ...EMPTY,
    podName: "p",
  });
});

Deno.test("parseCniArgs() rejects malformed CNI_ARGS with code 4 naming the problem", async (t) => {
  const cases: [string, RegExp][] = [
    ["K8S_POD_NAME", /malformed pair "K8S_POD_NAME": expected KEY=VALUE/],
    ["K8S_POD_NAME=a=b", /malformed pair "K8S_POD_NAME=a=b"/],
    ["=x", /malformed pair "=x"/],
    ["K8S_POD_NAME=a;", /malformed pair ""/],
    [";K8S_POD_NAME=a", /malformed pair ""/],
    ["FOO=bar", /unknown keys FOO: set IgnoreUnknown=1/],
    ["FOO=1;BAR=2;K8S_POD_NAME=p", /unknown keys FOO, BAR/],
    ["IgnoreUnknown=0;FOO=1", /unknown keys FOO/],
    ["IgnoreUnknown=false;FOO=1", /unknown keys FOO/],
    ["IgnoreUnknown=yes", /IgnoreUnknown "yes": expected 1, true, 0 or false/],
    ["IgnoreUnknown=", /IgnoreUnknown "": expected/],
    ["K8S_POD_NAME=a;K8S_POD_NAME=b", /gives K8S_POD_NAME twice: "a" and "b"/],
    ["k8s_pod_name=a", /unknown keys k8s_pod_name/],
  ];
  for (const [text, pattern] of cases) {
    await t.step(JSON.stringify(text), () => {
      assert.throws(() => parseCniArgs(text), (err: unknown) => {
        assert.ok(err instanceof CniError);
        assert.equal(err.code, 4);
        assert.match(err.msg, pattern);
        assert.ok(err.msg.startsWith(`CNI_ARGS ${JSON.stringify(text)} `), err.msg);
        return true;
      });
      assert.match(cniArgsProblem(text) ?? "", pattern);
    });
  }
});

Deno.test("cniArgsProblem() is undefined for valid CNI_ARGS", () => {
  assert.equal(cniArgsProblem(""), undefined);
  assert.equal(cniArgsProblem("IgnoreUnknown=1;X=y"), undefined);
});
