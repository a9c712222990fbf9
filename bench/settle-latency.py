#!/usr/bin/env python3
"""bench/settle-latency.py - what a user feels when they change a SliceCache:
the time from a spec patch until status.observedGeneration reaches the
generation that patch made. Used by bench/operator-scale.sh.

For each named SliceCache, one after the other: list it (by name), open a
watch on it from the list's resourceVersion, send a JSON merge patch that flips
spec.slicing.sliceSize between 1Mi and 2Mi (a tunable: the operator rewrites
the agents' ConfigMap and the status), and wait on the watch for an object
whose status.observedGeneration is at least the patched generation. Prints
one line per SliceCache, "NAME MILLISECONDS". The clock starts just before
the patch is sent and stops when the watch event arrives, so process
start-up and polling intervals are not in the number.

Usage: settle-latency.py SERVER TOKEN_FILE CA_FILE NAMESPACE NAME...
Standard library only.
"""

import http.client
import json
import ssl
import sys
import time
import urllib.parse

GROUP_PATH = "/apis/slicecache.io/v1alpha1"
TIMEOUT_S = 120


def main() -> int:
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    server, token_file, ca_file, namespace = sys.argv[1:5]
    names = sys.argv[5:]
    url = urllib.parse.urlsplit(server)
    with open(token_file, encoding="utf-8") as f:
        token = f.read().strip()
    tls = ssl.create_default_context(cafile=ca_file)
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    base = f"{GROUP_PATH}/namespaces/{namespace}/slicecaches"

    def connect() -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(url.hostname, url.port, context=tls, timeout=TIMEOUT_S)

    api = connect()

    def call(method: str, path: str, body: object = None, content_type: str = "") -> dict:
        h = dict(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = content_type
        api.request(method, path, body=data, headers=h)
        resp = api.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} {payload[:300]!r}")
        return json.loads(payload)

    for name in names:
        # A list's resourceVersion is current; the object's own may be older
        # than the watch cache keeps (410 Expired).
        selector = urllib.parse.urlencode({"fieldSelector": f"metadata.name={name}"})
        listed = call("GET", f"{base}?{selector}")
        if len(listed["items"]) != 1:
            raise RuntimeError(f"{name}: not found")
        obj = listed["items"][0]
        size = obj.get("spec", {}).get("slicing", {}).get("sliceSize", "1Mi")
        new_size = "1Mi" if size == "2Mi" else "2Mi"
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "fieldSelector": f"metadata.name={name}",
                "resourceVersion": listed["metadata"]["resourceVersion"],
                "timeoutSeconds": str(TIMEOUT_S),
            }
        )
        watch = connect()
        watch.request("GET", f"{base}?{query}", headers=headers)
        stream = watch.getresponse()
        if stream.status != 200:
            raise RuntimeError(f"watch {name}: {stream.status} {stream.read()[:300]!r}")

        started = time.monotonic()
        patched = call(
            "PATCH",
            f"{base}/{name}",
            {"spec": {"slicing": {"sliceSize": new_size}}},
            "application/merge-patch+json",
        )
        want = patched["metadata"]["generation"]
        elapsed = None
        while elapsed is None:
            line = stream.readline()
            if not line:
                raise RuntimeError(f"{name}: the watch ended before observedGeneration reached {want}")
            event = json.loads(line)
            if event.get("type") == "ERROR":
                raise RuntimeError(f"{name}: watch error {event.get('object')}")
            seen = event.get("object", {}).get("status", {}).get("observedGeneration", 0)
            if seen >= want:
                elapsed = time.monotonic() - started
        watch.close()
        print(f"{name} {elapsed * 1000:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
