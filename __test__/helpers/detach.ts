// The ways JavaScript detaches an ArrayBuffer, for the tests of what a step in flight does then.
import { MessageChannel } from 'node:worker_threads'

/** Each way by name: transferring the buffer with structuredClone, and with postMessage. */
export const detachers: Array<[string, (buffer: ArrayBuffer) => void]> = [
  ['structuredClone with transfer', (buffer) => void structuredClone(buffer, { transfer: [buffer] })],
  [
    'postMessage with transfer',
    (buffer) => {
      const { port1, port2 } = new MessageChannel()
      port1.postMessage(buffer, [buffer])
      port1.close()
      port2.close()
    },
  ],
]
