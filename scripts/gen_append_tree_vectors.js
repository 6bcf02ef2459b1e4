// Random put/del sequences run through the real append-tree 2.4.4, for tests/test_append_tree.py.
// Run: cp -r ../shared/anchors/drive9 .cache/drive9 && (cd .cache/drive9 && npm install)
//      NODE_PATH=.cache/drive9/node_modules node scripts/gen_append_tree_vectors.js > tests/data/append_tree_random.json
const tree = require('append-tree')
const hypercore = require('hypercore')
const ram = require('random-access-memory')

let state = 12345 // a fixed LCG so the file is the same on every run
function rand (n) { state = (state * 1103515245 + 12345) % 2147483648; return state % n }

const PARTS = ['a', 'b', 'c', 'dd']
function randomPath () {
  const depth = 1 + rand(3)
  const names = []
  for (let i = 0; i < depth; i++) names.push(PARTS[rand(PARTS.length)])
  return '/' + names.join('/')
}

async function run (seed, steps) {
  state = seed
  const feed = hypercore(ram)
  await new Promise(resolve => feed.ready(resolve))
  const tr = tree(feed, { valueEncoding: 'utf-8' })
  const ops = []
  for (let i = 0; i < steps; i++) {
    const name = randomPath()
    const del = rand(3) === 0
    const value = 'v' + i
    const before = feed.length
    await new Promise((resolve, reject) => del ? tr.del(name, e => e ? reject(e) : resolve()) : tr.put(name, value, e => e ? reject(e) : resolve()))
    // a del on an empty tree appends nothing
    const block = feed.length === before ? null : await new Promise((resolve, reject) => feed.get(feed.length - 1, (e, b) => e ? reject(e) : resolve(b)))
    ops.push({ op: del ? 'del' : 'put', name, value: del ? null : value, block: block && block.toString('hex') })
  }
  // what get and list answer at the end, for every path of up to 3 components
  const reads = {}
  const all = ['/']
  for (const a of PARTS) { all.push('/' + a); for (const b of PARTS) { all.push('/' + a + '/' + b); for (const c of PARTS) all.push('/' + a + '/' + b + '/' + c) } }
  for (const p of all) {
    const got = await new Promise(resolve => tr.get(p, (e, v) => resolve(e ? null : v)))
    const list = await new Promise(resolve => tr.list(p, (e, l) => resolve(e ? null : l)))
    reads[p] = { get: got, list }
  }
  // what diff gives from the middle of the sequence (and from the empty tree) to the end
  const diffs = {}
  for (const from of [-1, Math.floor(feed.length / 2)]) {
    diffs[from] = await new Promise((resolve, reject) => {
      const out = []
      tr.checkout(from).diff(tr).on('data', d => out.push({ type: d.type, name: d.name, version: d.version })).on('end', () => resolve(out)).on('error', reject)
    })
  }
  return { ops, reads, diffs }
}

;(async () => {
  const out = []
  for (let seed = 1; seed <= 30; seed++) out.push(await run(seed, 60))
  console.log(JSON.stringify({ about: 'append-tree@2.4.4, offset 0, utf-8 values; each sequence starts from an empty feed', sequences: out }))
})()
