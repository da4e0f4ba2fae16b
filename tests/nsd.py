"""A throw-away authoritative DNS server (Debian nsd) for made-up zones, on a loopback port.

Run in the foreground (`nsd -d`) with a config of its own in a temp folder: no system service is
used or changed. Zones are given as record lines relative to their origin ("@ TXT \"v=spf1 -all\"").
"""

from __future__ import annotations

import subprocess
import time

import dns.exception
import dns.resolver

from .leftovers import server_folder
from .listening import stop_and_remove
from .ports import free_port

NSD = "/usr/sbin/nsd"


def txt(value: str) -> str:
    """A TXT record's data, cut into the 255-byte strings DNS allows (a DKIM key is longer)."""
    return " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))


class NsdServer:
    def __init__(self, zones: dict[str, list[str]]) -> None:
        self.dir = server_folder("nsd")
        self.port = free_port()
        config = [f"""server:
  ip-address: 127.0.0.1@{self.port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{self.dir}"
  pidfile: "{self.dir}/nsd.pid"
  database: ""
  zonelistfile: "{self.dir}/zone.list"
  xfrdfile: "{self.dir}/xfrd.state"
  xfrdir: "{self.dir}"
  logfile: "{self.dir}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
"""]
        for origin, records in zones.items():
            (self.dir / f"{origin}.zone").write_text(
                f"$ORIGIN {origin}.\n$TTL 60\n@ SOA ns.{origin}. admin.{origin}. 1 60 60 60 60\n"
                f"@ NS ns.{origin}.\nns A 127.0.0.1\n" + "".join(f"{line}\n" for line in records))
            config.append(f"zone:\n  name: {origin}\n  zonefile: {origin}.zone\n")
        (self.dir / "nsd.conf").write_text("".join(config))
        self.process = subprocess.Popen([NSD, "-d", "-c", str(self.dir / "nsd.conf")],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            self._wait_answering(next(iter(zones)))
        except RuntimeError:
            self.stop()
            raise

    @property
    def address(self) -> str:
        """As NEWSLETTER_DOCTOR_NAMESERVER wants it."""
        return f"127.0.0.1:{self.port}"

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers, resolver.port, resolver.lifetime = ["127.0.0.1"], self.port, 5.0
        return resolver

    def _wait_answering(self, zone: str, timeout: float = 30) -> None:
        """Return once it answers for `zone` (it listens before it has read the zones)."""
        resolver = self.resolver()
        resolver.lifetime = 1.0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"nsd exited: {output} {self.log()}")
            try:
                resolver.resolve(zone, "SOA")
                return
            except dns.exception.DNSException:
                time.sleep(0.05)
        raise RuntimeError(f"nsd did not answer for {zone}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "nsd.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        stop_and_remove(self.process, self.dir)
