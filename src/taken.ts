/**
 * What the handles' take() returns, made into an inbox's flat list of items
 * (src/reader/inbox.ts) or events (src/writer/inbox.ts), `slots` values each.
 * @internal
 */

/**
 * The list an inbox keeps after `taken`, what its source's take() returned:
 * an array of items as it is, or a region returned alone (one small batch,
 * src/binding.ts) as the one item `lone` makes of it, padded with undefined
 * to `slots` values (none with the addon's layouts). When every item of
 * `items` was handled (`next` at its end) the new items are the list (the
 * caller starts it at 0); otherwise they are appended to `items`, which is
 * returned. Undefined when nothing came.
 */
export function withTaken(
  items: unknown[],
  next: number,
  taken: unknown[] | ArrayBuffer,
  slots: number,
  lone: (region: ArrayBuffer) => unknown[],
): unknown[] | undefined {
  let more: unknown[];
  if (Array.isArray(taken)) {
    if (taken.length === 0) return undefined;
    more = taken;
  } else {
    more = lone(taken);
    for (let k = more.length; k < slots; k++) more.push(undefined);
  }
  if (next >= items.length) return more;
  for (let i = 0; i < more.length; i++) items.push(more[i]);
  return items;
}
