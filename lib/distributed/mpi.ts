// The MPI communicator: collectives of the system's MPI (Open MPI, MPICH) through the optional
// native package packages/distributed-mpi, loaded only when asked for, so that fastoptim itself
// never needs MPI. Processes are started by `mpirun`/`mpiexec`; each is one rank of MPI_COMM_WORLD.
import { existsSync } from 'node:fs'
import { join } from 'node:path'

import { invalidState } from '../errors'
import type { FloatArray } from '../optimizer'
import { CheckedCommunicator, distributedError, type ReduceOp } from './communicator'

/** The binding's functions (packages/distributed-mpi/src/lib.rs). */
interface MpiBinding {
  init(): { rank: number; size: number; library: string }
  finalize(): void
  abort(code: number): void
  barrier(): void
  allReduce(buffer: FloatArray, mean: boolean): void
  reduceScatter(send: FloatArray, recv: FloatArray, mean: boolean): void
  allGather(buffer: FloatArray): void
  broadcast(buffer: FloatArray, root: number): void
}

/** Where the binding is looked for: the published package, then the package built in this checkout. */
const CANDIDATES = ['@fastoptim/distributed-mpi', join(__dirname, '..', '..', 'packages', 'distributed-mpi')]

const INSTALL =
  'install MPI and build the optional package: on Debian or Ubuntu `apt-get install openmpi-bin libopenmpi-dev libclang-dev`, ' +
  'then `npm run build --prefix packages/distributed-mpi` (cargo builds it against the MPI found by mpicc), ' +
  'and start the processes with `mpirun -np N node script.js`'

/** Loads the binding, or throws `ERR_FASTOPTIM_MPI_UNAVAILABLE` saying what to install. */
export function loadMpiBinding(): MpiBinding {
  const tried: string[] = []
  for (const candidate of CANDIDATES) {
    if (candidate.startsWith('/') && !existsSync(join(candidate, 'index.js'))) {
      tried.push(`${candidate}: not built`)
      continue
    }
    try {
      return require(candidate) as MpiBinding
    } catch (error) {
      const message = (error as Error).message.split('\n')[0]
      // A built binding whose MPI libraries are gone says so (libmpi.so.40: cannot open shared object file).
      tried.push(`${candidate}: ${message}`)
    }
  }
  throw distributedError(
    'ERR_FASTOPTIM_MPI_UNAVAILABLE',
    `MPI is not available: ${INSTALL}. Tried ${tried.join('; ')}.`,
  )
}

let world: MpiCommunicator | undefined

/**
 * This process's MPI communicator (MPI_COMM_WORLD), initializing MPI on the first call. MPI is
 * finalized when the process exits with code 0; a process exiting with another code (an uncaught
 * error) calls MPI_Abort, which ends every rank of the job instead of leaving them waiting. Throws `ERR_FASTOPTIM_MPI_UNAVAILABLE`, naming what to
 * install, when the MPI package or the MPI libraries are missing.
 */
export function mpiCommunicator(): MpiCommunicator {
  if (world) return world
  const binding = loadMpiBinding()
  const { rank, size, library } = binding.init()
  // A rank ending in error aborts the job (the others would wait for it at their next
  // collective); one ending normally finalizes.
  process.once('exit', (code) => (code === 0 ? binding.finalize() : binding.abort(code)))
  world = new MpiCommunicator(binding, rank, size, library.trim())
  return world
}

/** `Communicator` over MPI_COMM_WORLD. */
export class MpiCommunicator extends CheckedCommunicator {
  readonly #binding: MpiBinding

  /** Use `mpiCommunicator()`. */
  constructor(
    binding: MpiBinding,
    readonly rank: number,
    readonly size: number,
    /** The MPI library, as it names itself. */
    readonly library: string,
  ) {
    super()
    if (world)
      throw invalidState('MpiCommunicator: use mpiCommunicator(), which makes the one communicator of the process')
    this.#binding = binding
  }

  protected allReduceChecked(buffer: FloatArray, op: ReduceOp): void {
    this.#binding.allReduce(buffer, op === 'mean')
  }

  protected reduceScatterChecked(send: FloatArray, recv: FloatArray, op: ReduceOp): void {
    this.#binding.reduceScatter(send, recv, op === 'mean')
  }

  protected allGatherChecked(buffer: FloatArray): void {
    this.#binding.allGather(buffer)
  }

  protected broadcastChecked(buffer: FloatArray, root: number): void {
    this.#binding.broadcast(buffer, root)
  }

  barrier(): void {
    this.#binding.barrier()
  }

  /** Ends every rank of the job (MPI_Abort) with `code`: for a rank that cannot go on. */
  abort(code = 1): never {
    this.#binding.abort(code)
    throw invalidState('abort: MPI_Abort returned')
  }
}
