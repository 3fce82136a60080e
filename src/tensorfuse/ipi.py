"""Drive i-PI with a tensorfuse model: path-integral and other i-PI simulations (``tensorfuse ipi``).

i-PI (``pip install ipi``) runs the dynamics and asks a *driver* over a socket for the energy,
forces and virial of each bead. The driver here is ASE's i-PI client
(:class:`ase.calculators.socketio.SocketClient`, which converts i-PI's atomic units to Å and eV
and back) around :class:`tensorfuse.calculator.Calculator`::

    from ase.io import read
    from tensorfuse.ipi import run_driver
    run_driver("model.pt", read("init.xyz"), host="localhost", port=31415)   # or unix="NAME"

i-PI sends only positions and a cell, never elements, so the driver takes the atoms from a
structure file: the same atoms in the same order as i-PI's initial configuration (give both the
same file). Periodicity comes from that file as well:

* **periodic along all three axes** (an extxyz with a ``Lattice`` and ``pbc="T T T"``): i-PI's
  cell, as sent at every step, with periodic images, and the virial is returned (NPT works);
* **not periodic** (a molecule): i-PI's cell (it always has one; give it a large box) is ignored
  and the virial is zero. Keep i-PI from wrapping the atoms into its box, which would tear the
  molecule apart: ``<ffsocket pbc="false">`` (i-PI's default).

i-PI's own Python driver can load the model in process instead: ``i-pi-py_driver -m custom -P
PES_FILE -o template=init.xyz,model=model.pt`` (:mod:`tensorfuse.ipi_pes`; ``tensorfuse ipi
--pes-file`` prints the path).

Connecting retries for ``connect_timeout`` seconds, so the driver may start before i-PI has
opened its socket; an address nobody listens on ends in one :class:`ConnectionError` naming it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path


DEFAULT_PORT = 31415
PES_FILE = Path(__file__).resolve().with_name("ipi_pes.py")  # for i-pi-py_driver -m custom -P PES_FILE
UNIX_PREFIX = "/tmp/ipi_"  # where i-PI (and ASE's client) put <ffsocket mode="unix"> sockets
_RETRY_SECONDS = 0.2


@dataclass(frozen=True)
class DriverResult:
    """One driver session: the force calls i-PI asked for (one per bead and step, and a few
    more at the start) and the wall time from the connection to i-PI's goodbye."""

    calls: int
    seconds: float

    @property
    def ms_per_call(self) -> float:
        return 1000 * self.seconds / max(self.calls, 1)


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``":PORT"``, ``"PORT"`` for localhost) -> ``(host, port)``."""
    host, _, port = text.strip().rpartition(":")
    host = host.strip("[]") or "localhost"
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"--address must be HOST:PORT (e.g. localhost:{DEFAULT_PORT}), got {text!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"the port of --address {text!r} must be between 1 and 65535")
    return host, number


def describe_address(host: str = "localhost", port: int | None = None, unix: str | None = None) -> str:
    return f"unix socket {UNIX_PREFIX}{unix}" if unix is not None else f"{host}:{port or DEFAULT_PORT}"


def check_socket_settings(unix: str | None, timeout: float) -> None:
    """Refuse a UNIX socket name with a path in it, or a connection timeout that is not > 0."""
    if unix is not None and (not unix or "/" in unix):
        raise ValueError(f"--unix takes the socket's NAME as in i-PI's <address> (the socket is {UNIX_PREFIX}NAME), "
                         f"got {unix!r}")
    if not timeout > 0:
        raise ValueError(f"the connection timeout must be > 0 seconds, got {timeout}")


def connect(host: str = "localhost", port: int | None = None, unix: str | None = None,
            timeout: float = 30.0):
    """An ASE ``SocketClient`` connected to i-PI, trying again until ``timeout`` seconds have passed."""
    from ase.calculators.socketio import SocketClient

    check_socket_settings(unix, timeout)
    where = describe_address(host, port, unix)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        previous = socket.getdefaulttimeout()
        # ASE's client connects with a blocking socket: the default timeout bounds each attempt (a
        # host that drops packets would otherwise hold it for minutes); ASE then makes it blocking
        socket.setdefaulttimeout(max(remaining, _RETRY_SECONDS))
        try:
            client = SocketClient(host=host, port=port or DEFAULT_PORT, unixsocket=unix)
            if unix is None:
                # the client answers in several small sends: with Nagle's algorithm and i-PI's delayed
                # acknowledgements each force call would wait ~40 ms
                client.protocol.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return client
        except socket.gaierror as error:
            raise ConnectionError(f"cannot connect to i-PI at {where}: unknown host {host!r} ({error.strerror})") from None
        except (ConnectionRefusedError, FileNotFoundError, socket.timeout) as error:
            # i-PI may not have opened its socket yet: wait for it, up to the deadline
            if time.monotonic() + _RETRY_SECONDS >= deadline:
                reason = "no answer" if isinstance(error, socket.timeout) else (
                    "no such socket" if isinstance(error, FileNotFoundError) else "connection refused")
                raise ConnectionError(f"cannot connect to i-PI at {where} ({reason}, tried for {timeout:g} s): start "
                                      f"i-pi first, with this address in its <ffsocket>") from None
        except OSError as error:  # unreachable network, permission denied, a name too long for a socket
            raise ConnectionError(f"cannot connect to i-PI at {where}: {error.strerror or error}") from None
        finally:
            socket.setdefaulttimeout(previous)
        time.sleep(_RETRY_SECONDS)


def make_calculator(model, device: str = "cpu", dtype=None):
    """A :class:`~tensorfuse.calculator.Calculator` for a model file, a ``Potential`` or a calculator as it is."""
    from tensorfuse.calculator import Calculator

    return model if isinstance(model, Calculator) else Calculator(model, device=device, dtype=dtype)


def check_elements(atoms, calculator, label: str = "the structure") -> None:
    """Refuse a structure with elements the model does not know (before any connection)."""
    unknown = sorted(set(atoms.numbers.tolist()) - calculator.species)
    if unknown:
        raise ValueError(f"{label}: element(s) with atomic number {unknown} are not in the model's species "
                         f"{sorted(calculator.species)}")


def run_driver(model, atoms, host: str = "localhost", port: int | None = None, unix: str | None = None,
               device: str = "cpu", dtype=None, connect_timeout: float = 30.0, on_connect=None,
               label: str = "the structure") -> DriverResult:
    """Serve i-PI's force requests with ``model`` until i-PI ends the run (or closes the socket).

    ``atoms``: the structure i-PI simulates (elements, atom order, periodicity; its positions
    and cell are replaced by i-PI's at every request). ``host``/``port`` for ``<ffsocket
    mode="inet">``, or ``unix`` (the NAME of ``<ffsocket mode="unix">``, socket
    ``/tmp/ipi_NAME``). ``on_connect()`` is called once connected.
    """
    check_socket_settings(unix, connect_timeout)
    calculator = make_calculator(model, device, dtype)
    check_elements(atoms, calculator, label)
    atoms = atoms.copy()
    atoms.calc = calculator
    periodic = bool(atoms.pbc.all())
    atoms.get_forces()  # a first call before i-PI waits on us: model errors and kernel builds come now
    client = connect(host, port, unix, connect_timeout)
    if on_connect is not None:
        on_connect()
    where = describe_address(host, port, unix)
    calls, start = 0, time.perf_counter()
    try:
        for _ in client.irun(atoms, use_stress=periodic):  # ASE's client returns when i-PI says EXIT or hangs up
            calls += 1
    except ValueError as error:
        if "broadcast" in str(error):  # ASE copies i-PI's positions into the structure's atoms
            raise ValueError(f"i-PI at {where} sent positions for another number of atoms than the {len(atoms)} of "
                             f"{label} ({error}): give the driver i-PI's initial structure") from None
        if isinstance(error, UnicodeDecodeError):
            raise ConnectionError(f"the server at {where} is not i-PI (it sent a message that is not text)") from None
        raise
    except (KeyError, AssertionError) as error:  # ASE's client checks every message of the protocol
        raise ConnectionError(f"the server at {where} does not follow i-PI's protocol ({error!r})") from None
    except OSError as error:  # a reset connection; a clean hang-up by i-PI ends the loop above instead
        raise ConnectionError(f"the connection to i-PI at {where} broke after {calls} force calls: "
                              f"{error.strerror or error}") from None
    finally:
        client.close()
    return DriverResult(calls, time.perf_counter() - start)
