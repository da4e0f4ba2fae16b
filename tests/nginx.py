"""Debian's nginx in the foreground, running deploy/nginx/newsletter.conf in front of a test `serve`.

The shipped server block is used as it is; only what names this machine changes: the listening
port (loopback), the upstream's port, the certificate paths and the install folder. Everything
nginx writes (pid, logs, temp files) stays in a temp folder; no system service is used.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

from .leftovers import server_folder
from .listening import wait_listening
from .ports import free_port

NGINX = "/usr/sbin/nginx"
PROJECT = Path(__file__).resolve().parent.parent
SHIPPED = PROJECT / "deploy" / "nginx" / "newsletter.conf"


class NginxProxy:
    def __init__(self, upstream_port: int, certificate: Path, key: Path) -> None:
        self.dir = server_folder("nginx")
        self.dir.chmod(0o755)
        for temp in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / temp).mkdir(mode=0o777)
            (self.dir / temp).chmod(0o777)  # workers run as nobody
        self.port = free_port()
        server = SHIPPED.read_text(encoding="utf-8")
        for pattern, replacement in (
                (r"listen 443 ssl http2;", f"listen 127.0.0.1:{self.port} ssl http2;"),
                (r"listen \[::\]:443 ssl http2;\n", ""),
                (r"server 127\.0\.0\.1:8000;", f"server 127.0.0.1:{upstream_port};"),
                (r"ssl_certificate /\S+;", f"ssl_certificate {certificate};"),
                (r"ssl_certificate_key /\S+;", f"ssl_certificate_key {key};"),
                (r"/opt/newsletter/", f"{PROJECT}/")):
            server, count = re.subn(pattern, replacement, server)
            assert count, f"{pattern} not in {SHIPPED}: the test no longer runs the shipped file"
        (self.dir / "newsletter.conf").write_text(server, encoding="utf-8")
        (self.dir / "nginx.conf").write_text(f"""
user nobody nogroup;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    access_log {self.dir}/access.log;
    client_body_temp_path {self.dir}/client_body;
    proxy_temp_path {self.dir}/proxy;
    fastcgi_temp_path {self.dir}/fastcgi;
    uwsgi_temp_path {self.dir}/uwsgi;
    scgi_temp_path {self.dir}/scgi;
    include {self.dir}/newsletter.conf;
}}
""")
        self.process = subprocess.Popen([NGINX, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                         "-g", "daemon off;"],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_listening(self.port, "nginx", self.log, self.process)
        except RuntimeError:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
