"""The Kubernetes manifests (docker/k8s) checked offline, without a cluster.

Every object is validated against the API schemas of two Kubernetes versions, which
kubernetes-validate bundles (strict: an unknown field, a typo, is an error too). Then the
StatefulSet is checked for what the schemas cannot see but a multi-process Bytewax cluster
needs: one cluster size, Bytewax's process identity (BYTEWAX_POD_NAME minus
"<BYTEWAX_STATEFULSET_NAME>-", the addresses from BYTEWAX_HOSTFILE_PATH), names that
resolve before the pods are Ready, the recovery volume where ``--recovery`` points, every
variable the shell scripts read defined, resource requests on every container.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from pulse.flows.config import Settings

K8S = Path(__file__).resolve().parents[1] / "docker" / "k8s"
# The oldest Kubernetes still commonly run, and the newest the pinned validator knows.
VERSIONS = ("1.30", kubernetes_validate.utils.major_minor(kubernetes_validate.latest_version()))


def load(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
OBJECTS = [(name, i, doc) for name in MANIFESTS for i, doc in enumerate(load(name))]


def the(kind: str) -> dict:
    (found,) = [doc for _, _, doc in OBJECTS if doc["kind"] == kind]
    return found


def validate(obj: dict, version: str) -> None:
    """Validate one object; an invalid one fails with the validator's own message."""
    what = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(top level)"
        raise AssertionError(f"{what} is not valid for Kubernetes {e.version}: {where}: {e.message}") from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(e.message) from None


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,index,obj", OBJECTS, ids=[f"{n}#{i}" for n, i, _ in OBJECTS])
def test_every_manifest_is_valid_for_the_api(name, index, obj, version):
    validate(obj, version)


def test_an_invalid_manifest_is_rejected_with_the_validators_message():
    sts = copy.deepcopy(the("StatefulSet"))
    sts["spec"]["replicas"] = "two"
    with pytest.raises(AssertionError, match=r"StatefulSet/pulse is not valid .*: spec\.replicas: 'two' is not of type 'integer'"):
        validate(sts, VERSIONS[0])
    typo = copy.deepcopy(the("StatefulSet"))
    typo["spec"]["template"]["spec"]["containers"][0]["resource"] = typo["spec"]["template"]["spec"]["containers"][0].pop("resources")
    with pytest.raises(AssertionError, match=r"'resource' was unexpected"):
        validate(typo, VERSIONS[-1])


def test_the_kustomization_applies_every_manifest_but_the_secret_example():
    (k,) = load("kustomization.yaml")
    assert k["kind"] == "Kustomization"
    assert k["resources"] == [n for n in MANIFESTS if not n.endswith(".example.yaml")]
    images = {c["image"].rsplit(":", 1)[0] for c in containers(the("StatefulSet"))}
    assert images == {i["name"] for i in k["images"]}


def containers(sts: dict) -> list[dict]:
    spec = sts["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def by_name(sts: dict, name: str) -> dict:
    (found,) = [c for c in containers(sts) if c["name"] == name]
    return found


def script(container: dict) -> str:
    return "\n".join(container.get("command", []) + container.get("args", []))


def test_one_cluster_size_and_bytewax_process_identity():
    sts = the("StatefulSet")
    hostfile, pulse = by_name(sts, "hostfile"), by_name(sts, "pulse")
    # The hostfile lists BYTEWAX_REPLICAS processes: it must be the StatefulSet's size.
    assert int(env(hostfile)["BYTEWAX_REPLICAS"]) == sts["spec"]["replicas"]
    for c in (hostfile, pulse):
        assert env(c)["BYTEWAX_STATEFULSET_NAME"] == sts["metadata"]["name"]
    assert env(pulse)["BYTEWAX_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env(hostfile)["BYTEWAX_HOSTFILE_PATH"] == env(pulse)["BYTEWAX_HOSTFILE_PATH"]
    hostfile_dir = str(Path(env(pulse)["BYTEWAX_HOSTFILE_PATH"]).parent)
    mounts = [{m["mountPath"]: m["name"] for m in c["volumeMounts"]} for c in (hostfile, pulse)]
    assert mounts[0][hostfile_dir] == mounts[1][hostfile_dir]  # the init container writes what pulse reads
    run = script(pulse)
    assert "--process-id" in run and "--addresses" in run
    assert "--workers" not in run  # one worker per process: the worker count DEPLOY.md sizes the store for


def test_every_process_can_reach_every_other_before_it_is_ready():
    sts, svc = the("StatefulSet"), the("Service")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # All processes start together and are never rolled one by one: the cluster has a fixed size.
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["updateStrategy"]["type"] == "OnDelete"
    hostfile, pulse = by_name(sts, "hostfile"), by_name(sts, "pulse")
    port = int(env(hostfile)["CLUSTER_PORT"])
    assert {p["name"]: p["containerPort"] for p in pulse["ports"]}["cluster"] == port
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["cluster"] == port
    assert env(hostfile)["HEADLESS_SERVICE"] == svc["metadata"]["name"]


def test_the_recovery_volume_is_where_pulse_and_its_init_look():
    sts = the("StatefulSet")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"]
    path = re.search(r"--recovery[ =](\S+)", script(by_name(sts, "pulse"))).group(1)
    for name in ("recovery-init", "pulse"):
        mounts = {m["mountPath"]: m["name"] for m in by_name(sts, name)["volumeMounts"]}
        assert mounts[path] == claim["metadata"]["name"], name
    assert path in script(by_name(sts, "recovery-init"))
    # Removed or re-created pods must not take pod 0's recovery partitions with them.
    assert sts["spec"]["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_every_variable_the_scripts_read_is_defined():
    sts, config, secret = the("StatefulSet"), the("ConfigMap"), the("Secret")
    sources = {("configMapRef", config["metadata"]["name"]): config["data"], ("secretRef", secret["metadata"]["name"]): secret["stringData"]}
    for c in containers(sts):
        defined = set(env(c))
        for src in c.get("envFrom", []):
            ((kind, ref),) = src.items()
            defined |= set(sources[(kind, ref["name"])])
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                assert ref["key"] in sources[("configMapRef", ref["name"])], (c["name"], e["name"])
        text = script(c)
        used = set(re.findall(r"\$\{?([A-Z_][A-Z0-9_]*)", text))
        assert used <= defined, (c["name"], used - defined)
        # Kubernetes itself expands $(NAME) in command and args; the shell's $( must be written $$(.
        assert "$(" not in text.replace("$$", ""), c["name"]


def test_every_container_requests_cpu_and_memory_within_its_limits():
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}

    def amount(q: str) -> float:
        number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q)).groups()
        return float(number) * units.get(unit, 1)

    for c in containers(the("StatefulSet")):
        req, lim = c["resources"]["requests"], c["resources"].get("limits", {})
        assert {"cpu", "memory"} <= set(req), c["name"]
        for k, v in lim.items():
            assert amount(req[k]) <= amount(v), (c["name"], k)


def test_the_configmap_sets_real_settings_to_their_defaults():
    """Its PULSE_* keys must name settings (a typo would be ignored silently), and, as its
    header says, hold the defaults."""
    data = the("ConfigMap")["data"]
    for key, value in data.items():
        if not key.startswith("PULSE_"):
            continue
        field = key[len("PULSE_"):].lower()
        assert field in Settings.model_fields, f"{key} is not a Pulse setting"
        default = Settings.model_fields[field].default
        parsed = getattr(Settings.model_validate({field: yaml.safe_load(value)}), field)
        assert parsed == default, f"{key}={value!r}, the default is {default!r}"


def test_the_store_the_recovery_init_makes_is_one_pulse_resumes(tmp_path):
    import os
    import subprocess
    import sys

    from pulse.flows.replay import prepare_recovery

    init = by_name(the("StatefulSet"), "recovery-init")
    path = re.search(r"--recovery[ =](\S+)", script(by_name(the("StatefulSet"), "pulse"))).group(1)
    store = tmp_path / "recovery"
    text = init["args"][0].replace(path, str(store))
    environ = {**os.environ, "BYTEWAX_POD_NAME": "pulse-0", "BYTEWAX_STATEFULSET_NAME": "pulse", "RECOVERY_PARTITIONS": "3",
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["/bin/sh", "-ec", text], env=environ, check=True, capture_output=True)
    assert len(list(store.glob("part-*.sqlite3"))) == 3
    assert prepare_recovery(store, 2).resumed  # pod 0's `pulse run` takes it
