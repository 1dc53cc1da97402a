// `fastoptim/distributed`: data-parallel training over several ranks — collectives over MPI or
// over worker threads of one process, and an optimizer whose state is sharded over the ranks.
export { blockOf, type Communicator, type DistributedErrorCode, type ReduceOp } from './communicator'
export {
  isWorkerRank,
  runWorkers,
  SharedMemoryCommunicator,
  workerCommunicator,
  type RunWorkersOptions,
} from './shared-memory'
export { loadMpiBinding, MpiCommunicator, mpiCommunicator } from './mpi'
export { ShardedOptimizer, type OptimizerClass, type ShardOptions } from './sharded'
export {
  INDEX_FILE,
  loadShardedCheckpoint,
  saveShardedCheckpoint,
  shardFileName,
  type ShardedCheckpointOptions,
} from './checkpoint'
