#!/usr/bin/env python3
"""Module import graph of one crate: prints every import cycle among its modules (CYCLE
lines) and exits 1 if there is one. `-v` prints the edges too. Usage:

    python3 .ci/deps.py gateway/src [depth] [-v]

A module refers to another when its non-test code names `crate::other` (or `super::x` for a
sibling); comments, `#[cfg(test)] mod tests` blocks and test-only module files do not count.
depth 1 compares top-level modules, 2 also their submodules.
"""
import os,re,sys
from collections import defaultdict
root=sys.argv[1]  # crate src dir
args=[a for a in sys.argv[2:] if a!='-v']
depth=int(args[0]) if args else 1
mods={}
for dp,dn,fn in os.walk(root):
    for f in fn:
        if not f.endswith('.rs'): continue
        p=os.path.join(dp,f); rel=os.path.relpath(p,root)[:-3]
        parts=rel.split('/')
        if parts[-1]=='mod': parts=parts[:-1]
        if parts in (['lib'],['main']): continue
        mods[p]='/'.join(parts[:depth]) if parts else 'root'

def strip_test_modules(src):
    """Removes every `#[cfg(test)] mod name { ... }` block (attributes between allowed)."""
    out=[]; pos=0
    pat=re.compile(r'#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([a-z]+\))?\s+)?mod\s+[a-z_0-9]+\s*\{')
    while True:
        m=pat.search(src,pos)
        if not m:
            out.append(src[pos:]); break
        out.append(src[pos:m.start()])
        depth=1; i=m.end()
        while i<len(src) and depth:
            c=src[i]
            if c=='{': depth+=1
            elif c=='}': depth-=1
            i+=1
        pos=i
    return ''.join(out)

edges=defaultdict(set)
testmods=set()
for p in mods:
    for mm in re.finditer(r'#\[cfg\(test\)\]\s*(?:pub\s+)?mod ([a-z_0-9]+);',open(p).read()):
        testmods.add(os.path.join(os.path.dirname(p),mm.group(1)+'.rs'))
for t in testmods: mods.pop(t,None)
for p,m in mods.items():
    src=open(p).read()
    # strip test modules roughly: cut at #[cfg(test)]
    src=strip_test_modules(src)
    src='\n'.join(l for l in src.split('\n') if not l.strip().startswith('//'))
    src=re.sub(r'#\[cfg\(test\)\]\s*mod [a-z_]+;','',src)
    for mm in re.finditer(r'crate::([a-z_0-9]+)(?:::([a-z_0-9]+))?',src):
        t=mm.group(1)
        if depth>1 and mm.group(2) and os.path.isdir(os.path.join(root,t)): t=t+'/'+mm.group(2)
        t='/'.join(t.split('/')[:depth])
        if t!=m: edges[m].add(t)
    # super:: refs inside dir modules
    for mm in re.finditer(r'super::([a-z_0-9]+)',src):
        par=os.path.dirname(os.path.relpath(p,root))
        if par and not p.endswith('mod.rs'):
            t=par+'/'+mm.group(1) if os.path.exists(os.path.join(root,par,mm.group(1)+'.rs')) or os.path.isdir(os.path.join(root,par,mm.group(1))) else par
            t='/'.join(t.split('/')[:depth])
            if t!=m: edges[m].add(t)
# SCCs
import itertools
nodes=set(mods.values())|{t for s in edges.values() for t in s}
idx={};low={};st=[];on=set();sccs=[];c=[0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
    for w in edges.get(v,()):
        if w not in idx: sc(w);low[v]=min(low[v],low[w])
        elif w in on: low[v]=min(low[v],idx[w])
    if low[v]==idx[v]:
        comp=[]
        while True:
            w=st.pop();on.discard(w);comp.append(w)
            if w==v:break
        sccs.append(comp)
for v in sorted(nodes):
    if v not in idx: sc(v)
cycles=[s for s in sccs if len(s)>1]
for s in cycles: print('CYCLE',sorted(s))
if '-v' in sys.argv:
    for m in sorted(edges): print(m,'->',sorted(edges[m]))

sys.exit(1 if cycles else 0)
