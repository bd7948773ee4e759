#!/usr/bin/env python3
"""Rebuild tests/corpora/sample from the full corpora (deterministic; standard library only).

    python3 tests/corpora/sample/extract.py /path/to/corpora

Takes a few dozen cases of each corpus, with the oracle rows that describe them, so that the
conformance tests always run their code paths on a fresh clone. Only material whose licence
allows redistribution with a notice is taken (see README.md here); Yara-Rules (GPL-2.0) is not.
"""
import json
import os
import shutil
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("HLI_CORPORA", "")
DST = os.path.dirname(os.path.abspath(__file__))


def rows(path):
    with open(os.path.join(SRC, path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_rows(path, items):
    out = os.path.join(DST, path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")


def copy(relative):
    out = os.path.join(DST, relative)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    shutil.copyfile(os.path.join(SRC, relative), out)


def stix():
    cases = rows("stix-patterns/validator-cases.jsonl")
    reals = rows("stix-patterns/real-patterns.jsonl")
    oracle = rows("stix-patterns/oracle-expected.jsonl")
    assert len(oracle) == len(cases) + len(reals)
    v21 = [i for i, c in enumerate(cases) if c["stix_version"] == "2.1"]
    valid = [i for i in v21 if cases[i]["valid"]][::6]
    invalid = [i for i in v21 if not cases[i]["valid"]][::2]
    v20 = [i for i, c in enumerate(cases) if c["stix_version"] == "2.0"][:2]
    picked_cases = sorted(set(valid + invalid + v20))

    def multi(i):
        return oracle[len(cases) + i]["comparisons"] and len(oracle[len(cases) + i]["comparisons"]) > 1

    picked = list(range(5))  # the head of the file (cli_translate checks line 1)
    by_source = {}
    for i, r in enumerate(reals):
        key = "/".join(r["source"].split("/")[:2])
        by_source.setdefault(key, []).append(i)
    for key in sorted(by_source):
        picked += by_source[key][:4]
    picked += [i for i in range(len(reals)) if multi(i)][:6]
    picked += [i for i, r in enumerate(reals) if " LIKE " in r["pattern"]][:2]
    picked += [i for i, r in enumerate(reals) if oracle[len(cases) + i]["observation_ops"]][:2]
    picked_reals = sorted(set(picked))

    write_rows("stix-patterns/validator-cases.jsonl", [cases[i] for i in picked_cases])
    write_rows("stix-patterns/real-patterns.jsonl", [reals[i] for i in picked_reals])
    write_rows(
        "stix-patterns/oracle-expected.jsonl",
        [oracle[i] for i in picked_cases] + [oracle[len(cases) + i] for i in picked_reals],
    )
    non_stix = rows("stix-patterns/non-stix-indicator-patterns.jsonl")
    write_rows("stix-patterns/non-stix-indicator-patterns.jsonl", non_stix)
    for name in sorted(os.listdir(os.path.join(SRC, "stix-patterns/LICENSES"))):
        copy("stix-patterns/LICENSES/" + name)
    print(f"stix: {len(picked_cases)} validator cases, {len(picked_reals)} real patterns, "
          f"{len(non_stix)} non-stix indicators")


def sigma():
    oracle = rows("sigma/oracle-expected.jsonl")
    accepted = [r for r in oracle if r["pysigma_ok"]]
    rejected = [r for r in oracle if not r["pysigma_ok"]]
    picked = {}
    for r in accepted:
        top = r["file"].split("/")[0]
        if sum(1 for p in picked.values() if p["file"].split("/")[0] == top) < 3:
            picked[r["file"]] = r
    for r in rejected[:4]:
        picked[r["file"]] = r
    chosen = [picked[f] for f in sorted(picked)]
    for r in chosen:
        copy("sigma/" + r["file"])
    write_rows("sigma/oracle-expected.jsonl", chosen)
    copy("sigma/LICENSE")
    copy("sigma/DRL-1.1.txt")
    print(f"sigma: {len(chosen)} rule files")


def yara():
    oracle = rows("yara/oracle-expected.jsonl")
    base = [r for r in oracle if r["file"].startswith("signature-base/")]

    def size(r):
        return os.path.getsize(os.path.join(SRC, "yara", r["file"]))

    no_rule = [r for r in base if not r["rule_names"]][:1]
    single = sorted((r for r in base if r["rule_names"] and len(r["rule_names"]) == 1), key=size)[:8]
    several = sorted((r for r in base if r["rule_names"] and len(r["rule_names"]) > 2), key=size)[:3]
    chosen = sorted(no_rule + single + several, key=lambda r: r["file"])
    for r in chosen:
        copy("yara/" + r["file"])
    write_rows("yara/oracle-expected.jsonl", chosen)
    copy("yara/signature-base/LICENSE")
    print(f"yara: {len(chosen)} signature-base files")


if __name__ == "__main__":
    if not SRC or not os.path.isdir(SRC):
        sys.exit("usage: extract.py /path/to/corpora (or set HLI_CORPORA)")
    stix()
    sigma()
    yara()
