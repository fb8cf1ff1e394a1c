"""Run by tests/test_mpi_transport.py under `mpirun -np 2`: rank 1 sends, rank 0 receives with MpiTransport and
prints what it delivered and what it rejected as one JSON line."""
import json
import pickle
import sys
import time

from mpi4py import MPI

from trainer.fedml_glue import fedml_comm_only

fedml_comm_only()  # as the simulation's ranks do: FedML's comm classes without its package initialisers (5 s each)
from fedml.core.distributed.communication.message import Message  # noqa: E402

from federation.wire import encode
from trainer.transport import MpiTransport, receive_loop

CANARY = sys.argv[1]


class Canary:
    def __reduce__(self):
        return (open, (CANARY, "w"))


comm = MPI.COMM_WORLD.Dup()
rank = comm.Get_rank()
transport = MpiTransport(comm, rank, 2, 1 << 20)
if rank == 1:
    welcome = Message("fediot_welcome", 1, 0)
    welcome.add_params("round", 4)
    transport.send_message(welcome)  # genuine
    comm.Send([encode("fediot_welcome", 2, 0, {"round": 5}), MPI.BYTE], dest=0)  # claims to be rank 2
    comm.Send([pickle.dumps(Canary()), MPI.BYTE], dest=0)  # what FedML's comm.recv would unpickle
    comm.Send([b"\0" * (2 << 20), MPI.BYTE], dest=0)  # over max_bytes
    transport.flush()
else:
    delivered, rejected = [], []
    transport.reject = lambda sender, reason, count=1: rejected.extend([[sender, reason]] * count)
    deadline = time.monotonic() + 60
    receive_loop(transport.q_receiver, lambda: len(delivered) + len(rejected) < 4 and time.monotonic() < deadline,
                 transport, lambda m: delivered.append([m.get_type(), m.get_sender_id(), m.get("round")]))
    print(json.dumps({"delivered": delivered, "rejected": rejected}), flush=True)
comm.Barrier()
transport._stop_running = True
for thread in (transport._server_receive_thread, transport._client_receive_thread):
    if thread is not None:
        thread.stop()
        thread.join()
comm.Free()
