// Damaged copies of good bytes, as a hostile or corrupted file would hand them over.
import fc from 'fast-check'

/** `good` with up to 8 bytes changed, and in one case of three also cut short. */
export function damaged(good: Uint8Array): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat())
    .map(([edits, cut]) => {
      const bytes = good.slice(0, good.length - (cut % 3 === 0 ? cut % good.length : 0))
      for (const [at, value] of edits) if (bytes.length > 0) bytes[at % bytes.length] = value
      return bytes
    })
}
