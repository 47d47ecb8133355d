#!/usr/bin/env python3
# pip install grpcio grpcio-tools grpcio-health-checking pillow
"""Smoke test of the lookalike gRPC API from Python, built from the .proto file alone.

The Python stubs are generated at run time from proto/lookalike/v1/lookalike.proto (with
grpc_tools.protoc, into a temporary directory), so this shows that a non-Rust client
needs nothing but the proto file. Health uses the standard grpc.health.v1 stubs.

Every check prints one PASS/FAIL line; the exit status is 1 if any check failed.

Against a running server (entries are added under brand "smoke"; one is deleted):
    python3 tools/grpc_smoke.py --server 127.0.0.1:50051

Or let the script start and stop a server on a free port with a throw-away index:
    python3 tools/grpc_smoke.py --spawn target/release/lookalike
"""

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc
from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "proto"
PROTO_FILE = "lookalike/v1/lookalike.proto"  # relative to PROTO_ROOT
DEFAULT_IMAGES = REPO_ROOT / "tests" / "fixtures"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}

BRAND = "smoke"
CALL_TIMEOUT_S = 10  # deadline of every RPC, so a stuck server fails the run instead of hanging it
STARTUP_TIMEOUT_S = 15  # --spawn: wait this long for "serving gRPC on"
SHUTDOWN_TIMEOUT_S = 15  # --spawn: after SIGTERM (the server's default grace is 10 s)
MIRROR_MAX_DISTANCE = 31  # the server's default flag distance: a mirrored copy must be flagged
UNKNOWN_ID = 2**64 - 1  # largest uint64: never handed out as an entry id
# Deterministic bytes that are no image format (no magic number matches).
GARBAGE = b"this is not an image\x00" + bytes(range(256)) * 4


class CheckFailed(Exception):
    """A check's expectation was not met; the message says how."""


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def expect_code(code, rpc, *args, **kwargs):
    """Call `rpc(*args, **kwargs)`, which must fail with gRPC status `code`; return the status details."""
    try:
        rpc(*args, **kwargs)
    except grpc.RpcError as e:
        expect(e.code() == code, f"expected {code.name}, got {e.code().name}: {e.details()}")
        return e.details()
    raise CheckFailed(f"expected {code.name}, but the call succeeded")


def generate_stubs(out_dir):
    """Compile the proto into `out_dir` and import the generated modules from there."""
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_ROOT / PROTO_FILE),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed on {PROTO_FILE} (status {status})")
    # Regular packages, so that no other `lookalike` package on sys.path can shadow them.
    for package in ("lookalike", "lookalike/v1"):
        (out_dir / package / "__init__.py").touch()
    sys.path.insert(0, str(out_dir))
    from lookalike.v1 import lookalike_pb2, lookalike_pb2_grpc  # generated just above

    return lookalike_pb2, lookalike_pb2_grpc


def load_images(directory):
    """The JPEG/PNG files of `directory` as (stem, bytes), sorted by file name; others are skipped."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        sys.exit(f"{directory}: two images share a file stem; external ids must tell them apart")
    if len(files) < 2:
        sys.exit(f"{directory}: need at least two JPEG/PNG images, found {len(files)}")
    return [(p.stem, p.read_bytes()) for p in files]


def mirrored_png(image_bytes):
    """The image mirrored left to right, encoded as PNG (lossless, so the result is deterministic)."""
    with Image.open(io.BytesIO(image_bytes)) as im:
        upright = ImageOps.exif_transpose(im)  # mirror what a viewer shows, not the stored pixels
        out = io.BytesIO()
        ImageOps.mirror(upright.convert("RGB")).save(out, format="PNG")
    return out.getvalue()


class Smoke:
    """The checks, run in order against one channel. Later checks use the entries added earlier."""

    def __init__(self, channel, pb, pb_grpc, images):
        self.pb = pb
        self.health = health_pb2_grpc.HealthStub(channel)
        self.catalog = pb_grpc.CatalogStub(channel)
        self.matcher = pb_grpc.MatcherStub(channel)
        self.images = images  # [(stem, bytes)]
        self.added = {}  # stem -> AddImageResult of the first AddImages
        self.failures = 0

    def run(self, name, check):
        """Run one check and print its PASS/FAIL line; `check` returns a detail string."""
        try:
            detail = check()
        except CheckFailed as e:
            self.failures += 1
            print(f"FAIL  {name}: {e}", flush=True)
        except grpc.RpcError as e:
            self.failures += 1
            print(f"FAIL  {name}: unexpected RPC error {e.code().name}: {e.details()}", flush=True)
        else:
            print(f"PASS  {name}: {detail}", flush=True)

    def entry(self, stem):
        expect(stem in self.added, f"no entry for {stem!r}: AddImages did not add it")
        return self.added[stem]

    @property
    def target(self):
        """The image matched against: the highest PDQ quality (ties: first file name), so
        that its verdict is not LOW_QUALITY."""
        expect(self.added, "no entries: AddImages failed")
        stems = [stem for stem, _ in self.images if stem in self.added]
        return max(stems, key=lambda s: (self.entry(s).quality, -stems.index(s)))

    def image(self, stem):
        return dict(self.images)[stem]

    def add_request(self, stem, data):
        return self.pb.AddImageRequest(image=data, brand=BRAND, label=self.pb.LABEL_AUTHENTIC, external_id=stem)

    def add_images(self, images):
        requests = [self.add_request(stem, data) for stem, data in images]
        return list(self.catalog.AddImages(iter(requests), timeout=CALL_TIMEOUT_S))

    def match(self, data, request_id, **fields):
        request = self.pb.MatchRequest(image=data, request_id=request_id, brand=BRAND, **fields)
        return self.matcher.Match(request, timeout=CALL_TIMEOUT_S)

    # The checks, in the order they run.

    def check_health(self):
        services = ["", "lookalike.v1.Catalog", "lookalike.v1.Matcher"]
        for service in services:
            reply = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            expect(reply.status == health_pb2.HealthCheckResponse.SERVING, f"service {service!r} is {status}")
        return "SERVING for " + ", ".join(repr(s) for s in services)

    def check_add_images(self):
        results = self.add_images(self.images)
        expect(len(results) == len(self.images), f"{len(self.images)} requests but {len(results)} results")
        ok = {self.pb.ADD_STATUS_ADDED, self.pb.ADD_STATUS_ALREADY_PRESENT}
        for position, ((stem, _), result) in enumerate(zip(self.images, results)):
            status = self.pb.AddStatus.Name(result.status)
            expect(result.sequence == position, f"result {position} has sequence {result.sequence}")
            expect(result.external_id == stem, f"result {position} echoes {result.external_id!r}, sent {stem!r}")
            expect(result.status in ok, f"{stem}: {status} {result.error.message}")
            expect(result.id != 0, f"{stem}: {status} with id 0")
            expect(re.fullmatch("[0-9a-f]{64}", result.pdq), f"{stem}: pdq {result.pdq!r} is not 64 hex digits")
            self.added[stem] = result
        added = sum(r.status == self.pb.ADD_STATUS_ADDED for r in results)
        return f"{len(results)} images, one result each in order: {added} added, {len(results) - added} already present"

    def check_add_again(self):
        stem = self.target
        first = self.entry(stem)
        results = self.add_images([(stem, self.image(stem))])
        expect(len(results) == 1, f"1 request but {len(results)} results")
        result = results[0]
        status = self.pb.AddStatus.Name(result.status)
        expect(result.status == self.pb.ADD_STATUS_ALREADY_PRESENT, f"{stem}: {status}, expected ALREADY_PRESENT")
        expect(result.id == first.id, f"{stem}: id {result.id}, first added as {first.id}")
        return f"{stem}: ADD_STATUS_ALREADY_PRESENT, id {result.id}"

    def check_match_same(self):
        stem = self.target
        reply = self.match(self.image(stem), "same")
        verdict = self.pb.Verdict.Name(reply.verdict)
        expect(reply.request_id == "same", f"request_id echoed as {reply.request_id!r}")
        expect(reply.verdict == self.pb.VERDICT_BRAND_PHOTO_REUSED, f"verdict {verdict}")
        expect(reply.matches, "no matches")
        best = reply.matches[0]
        expect(best.id == self.entry(stem).id, f"first match is id {best.id} ({best.external_id})")
        expect(best.distance == 0, f"first match at distance {best.distance}")
        return f"{stem}: {verdict}, first match id {best.id} at distance 0"

    def check_match_mirrored(self):
        stem = self.target
        reply = self.match(mirrored_png(self.image(stem)), "mirrored")
        expect(reply.matches, f"no matches (verdict {self.pb.Verdict.Name(reply.verdict)})")
        best = reply.matches[0]
        orientation = self.pb.Orientation.Name(best.orientation)
        expect(best.id == self.entry(stem).id, f"first match is id {best.id} ({best.external_id})")
        expect(best.distance <= MIRROR_MAX_DISTANCE, f"distance {best.distance} > {MIRROR_MAX_DISTANCE}")
        expect(best.orientation != self.pb.ORIENTATION_ORIGINAL, f"orientation {orientation}")
        return f"{stem} mirrored: distance {best.distance}, {orientation} ({best.view!r})"

    def check_match_garbage(self):
        details = expect_code(grpc.StatusCode.INVALID_ARGUMENT, self.match, GARBAGE, "garbage")
        return f"INVALID_ARGUMENT ({details})"

    def check_match_unspecified_label(self):
        # A valid image, so that the label is the only thing wrong.
        data = self.image(self.target)
        code = grpc.StatusCode.INVALID_ARGUMENT
        details = expect_code(code, self.match, data, "unspecified-label", label=self.pb.LABEL_UNSPECIFIED)
        return f"INVALID_ARGUMENT ({details})"

    def check_match_stream(self):
        # Every image, plus one garbage item: a failed item must be answered (with `error`
        # set) and carry its request_id like the others.
        sent = {f"stream-{stem}": data for stem, data in self.images}
        sent["stream-garbage"] = GARBAGE
        requests = [self.pb.MatchRequest(image=data, request_id=rid, brand=BRAND) for rid, data in sent.items()]
        replies = list(self.matcher.MatchStream(iter(requests), timeout=CALL_TIMEOUT_S))
        echoed = sorted(r.request_id for r in replies)
        expect(echoed == sorted(sent), f"sent ids {sorted(sent)}, got {echoed}")
        for reply in replies:
            failed = reply.HasField("error")
            if reply.request_id == "stream-garbage":
                code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
                expect(failed and reply.error.code == code, f"garbage item: error {reply.error!r}")
            else:
                expect(not failed, f"{reply.request_id}: error {reply.error.code} {reply.error.message}")
        order = "in order" if [r.request_id for r in replies] == list(sent) else "out of order"
        return f"{len(sent)} requests, each request_id answered once ({order}); the garbage item carries error code 3"

    def check_get(self):
        stem = self.target
        first = self.entry(stem)
        reply = self.catalog.Get(self.pb.GetRequest(id=first.id), timeout=CALL_TIMEOUT_S)
        expect(len(reply.entries) == 1, f"{len(reply.entries)} entries for one id")
        e = reply.entries[0]
        got = (e.id, e.brand, e.label, e.external_id, e.pdq)
        want = (first.id, BRAND, self.pb.LABEL_AUTHENTIC, stem, first.pdq)
        expect(got == want, f"got (id, brand, label, external_id, pdq) {got}, expected {want}")
        expect(not e.HasField("deleted_at_ms"), f"live entry has deleted_at_ms {e.deleted_at_ms}")
        return f"id {e.id}: brand {e.brand!r}, external_id {e.external_id!r}, pdq {e.pdq[:16]}..."

    def check_get_unknown(self):
        request = self.pb.GetRequest(id=UNKNOWN_ID)
        details = expect_code(grpc.StatusCode.NOT_FOUND, self.catalog.Get, request, timeout=CALL_TIMEOUT_S)
        return f"id {UNKNOWN_ID}: NOT_FOUND ({details})"

    def check_stats(self):
        ids = {r.id for r in self.added.values()}
        expect(ids, "no entries: AddImages failed")
        reply = self.catalog.Stats(self.pb.StatsRequest(), timeout=CALL_TIMEOUT_S)
        expect(reply.live >= len(ids), f"live {reply.live} < {len(ids)} entries added")
        ours = [c.count for c in reply.by_brand_label if c.brand == BRAND and c.label == self.pb.LABEL_AUTHENTIC]
        expect(ours and ours[0] >= len(ids), f"by_brand_label for {BRAND!r}/AUTHENTIC is {ours}")
        return f"live {reply.live} >= {len(ids)} added; {BRAND!r}/LABEL_AUTHENTIC count {ours[0]}"

    def delete_request(self, stem):
        return self.pb.DeleteRequest(external=self.pb.ExternalRef(brand=BRAND, external_id=stem))

    @property
    def delete_target(self):
        """The entry deleted: the last image that is not the match target."""
        return [stem for stem, _ in self.images if stem != self.target][-1]

    def check_delete(self):
        stem = self.delete_target
        entry_id = self.entry(stem).id
        reply = self.catalog.Delete(self.delete_request(stem), timeout=CALL_TIMEOUT_S)
        expect(entry_id in reply.deleted_ids, f"deleted_ids {list(reply.deleted_ids)} lacks {entry_id}")
        # Get still finds a deleted entry, now with its deletion time.
        entries = self.catalog.Get(self.pb.GetRequest(id=entry_id), timeout=CALL_TIMEOUT_S).entries
        expect(len(entries) == 1, f"Get after Delete: {len(entries)} entries for id {entry_id}")
        expect(entries[0].HasField("deleted_at_ms"), f"Get after Delete: id {entry_id} has no deleted_at_ms")
        return f"{BRAND}/{stem}: deleted ids {list(reply.deleted_ids)}; Get shows deleted_at_ms"

    def check_delete_again(self):
        stem = self.delete_target
        request = self.delete_request(stem)
        details = expect_code(grpc.StatusCode.NOT_FOUND, self.catalog.Delete, request, timeout=CALL_TIMEOUT_S)
        return f"{BRAND}/{stem}: NOT_FOUND ({details})"

    def run_all(self):
        self.run("health Check", self.check_health)
        self.run("Catalog.AddImages", self.check_add_images)
        self.run("Catalog.AddImages again", self.check_add_again)
        self.run("Matcher.Match same image", self.check_match_same)
        self.run("Matcher.Match mirrored copy", self.check_match_mirrored)
        self.run("Matcher.Match garbage bytes", self.check_match_garbage)
        self.run("Matcher.Match LABEL_UNSPECIFIED", self.check_match_unspecified_label)
        self.run("Matcher.MatchStream", self.check_match_stream)
        self.run("Catalog.Get by id", self.check_get)
        self.run("Catalog.Get unknown id", self.check_get_unknown)
        self.run("Catalog.Stats", self.check_stats)
        self.run("Catalog.Delete by external id", self.check_delete)
        self.run("Catalog.Delete again", self.check_delete_again)
        return self.failures


def spawn_server(binary, data_dir, log_path):
    """Start `binary serve` on a free port (the OS picks it: --listen 127.0.0.1:0) and
    return (process, address) once it logs "serving gRPC on ADDRESS"."""
    # RUST_LOG could hide the startup line and LOOKALIKE_SERVER would turn `serve` into a client.
    env = {k: v for k, v in os.environ.items() if k not in ("RUST_LOG", "LOOKALIKE_SERVER")}
    command = [str(binary), "--data", str(data_dir), "serve", "--listen", "127.0.0.1:0", "--no-http"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"serving gRPC on (\S+)", log_path.read_text(errors="replace"))
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    process.wait()
    sys.exit(f"the server did not start (no 'serving gRPC on' line); its log:\n{log_path.read_text(errors='replace')}")


def stop_server(process, log_path):
    """SIGTERM the server and check that it exits 0 in time; True if it did."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        print(f"FAIL  server stops on SIGTERM: still running after {SHUTDOWN_TIMEOUT_S} s (killed)")
        return False
    if code != 0:
        print(f"FAIL  server stops on SIGTERM: exit code {code}; its log:\n{log_path.read_text(errors='replace')}")
        return False
    print("PASS  server stops on SIGTERM: exit code 0")
    return True


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Python dependencies: pip install grpcio grpcio-tools grpcio-health-checking pillow",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="address of a running `lookalike serve` (plaintext), e.g. 127.0.0.1:50051; "
        f"the checks add entries under brand {BRAND!r} and delete one of them",
    )
    target.add_argument(
        "--spawn",
        metavar="BINARY",
        type=Path,
        help="start this lookalike binary (e.g. target/release/lookalike) on a free port with a "
        "temporary --data directory, run the checks, then SIGTERM it and check it exits 0",
    )
    parser.add_argument(
        "--images",
        metavar="DIR",
        type=Path,
        default=DEFAULT_IMAGES,
        help="directory of JPEG/PNG images to load (other files are skipped; "
        "default: tests/fixtures of this repository)",
    )
    args = parser.parse_args()
    images = load_images(args.images)

    with tempfile.TemporaryDirectory(prefix="grpc_smoke-") as tmp:
        tmp = Path(tmp)
        pb, pb_grpc = generate_stubs(tmp)
        process = None
        address = args.server
        if args.spawn:
            process, address = spawn_server(args.spawn, tmp / "index", tmp / "server.log")
            print(f"started {args.spawn} on {address}")
        try:
            with grpc.insecure_channel(address) as channel:
                failures = Smoke(channel, pb, pb_grpc, images).run_all()
            if process is not None:
                failures += not stop_server(process, tmp / "server.log")
        finally:
            if process is not None and process.poll() is None:  # a check raised: do not leave it running
                process.kill()
                process.wait()

    print(f"{'FAILED' if failures else 'OK'}: {failures} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
