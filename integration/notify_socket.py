#!/usr/bin/env python3
"""A stand-in for systemd's notification socket (sd_notify(3)), for
integration/systemd.sh: binds a unix datagram socket at SOCKET and appends
each message to LOG as one line (its fields joined by spaces), flushed at
once. On the first message with READY=1 it runs CHECK (a shell command),
right then, and writes its exit status and output to LOG.ready.

usage: notify_socket.py SOCKET LOG CHECK
"""
import os
import socket
import subprocess
import sys


def main():
    path, log_path, check = sys.argv[1:4]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    checked = False
    with open(log_path, "a", buffering=1) as log:
        # Bound by the harness' timeout; ends when the script kills it.
        while True:
            data = sock.recv(4096)
            fields = data.decode(errors="replace").split()
            log.write(" ".join(fields) + "\n")
            if "READY=1" in fields and not checked:
                checked = True
                run = subprocess.run(["bash", "-c", check], capture_output=True, text=True)
                with open(log_path + ".ready", "w") as out:
                    out.write(f"{run.returncode}\n{run.stdout}{run.stderr}")


if __name__ == "__main__":
    os.umask(0o077)
    main()
