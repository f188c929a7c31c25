"""The Python half of the `py_interop_server` example: a plain
`multiprocessing.connection.Client` talking to a Rust `mp_core::listener::python::Listener`.

    python3 echo_client.py HOST:PORT AUTHKEY MESSAGE...

Sends each MESSAGE with send_bytes, prints what the server answers, then says goodbye.
Exits with 3 if the handshake fails (a wrong key), printing AUTHENTICATION FAILED.
"""
import sys
from multiprocessing.connection import Client, AuthenticationError


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    authkey = sys.argv[2].encode()
    try:
        conn = Client((host, int(port)), authkey=authkey)
    except AuthenticationError as e:
        print(f"AUTHENTICATION FAILED: {e}", flush=True)
        return 3
    with conn:
        for message in sys.argv[3:]:
            conn.send_bytes(message.encode())
            print(f"python got {conn.recv_bytes().decode()!r}", flush=True)
        conn.send_bytes(b"bye")
    return 0


if __name__ == "__main__":
    sys.exit(main())
