"""Writes kallisto_abundances.json: kallisto 0.48's equivalence classes, effective lengths and estimates.

A small transcriptome with shared exons (random sequence), single-end reads simulated from known abundances,
then ``kallisto index``, ``kallisto quant --single --plaintext`` (est_counts, tpm, eff_length) and
``kallisto pseudo --single`` (the equivalence classes and their counts, the same pseudoalignment quant runs).
Needs the ``kallisto`` binary (``apt-get install -y kallisto``) and numpy only:

    python tests/reference/kallisto_abundances.py

The test (tests/em/test_abundances.py) needs only the JSON.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("kallisto_abundances.json")
SEED = 20240611
READ_LENGTH = 75
FRAGMENT_MEAN, FRAGMENT_SD = 200.0, 20.0
N_READS = 20_000
K = 31

# Exons by length, and transcripts as exon lists: gene A has three isoforms sharing exons (one is another's
# prefix, one skips an exon), gene B two isoforms differing by one exon, gene C one transcript. Every isoform
# has at least one junction or exon of its own except A-203, which only a junction (e0|e2) distinguishes.
EXON_LENGTHS = [420, 310, 260, 530, 380, 450, 290, 600, 700]
TRANSCRIPTS = {
    "A-201": [0, 1, 2, 3],
    "A-202": [0, 1, 2],
    "A-203": [0, 2, 3],
    "B-201": [4, 5, 6],
    "B-202": [4, 6, 7],
    "C-201": [8],
}
TRUE_SHARES = {"A-201": 0.30, "A-202": 0.10, "A-203": 0.15, "B-201": 0.20, "B-202": 0.05, "C-201": 0.20}

_COMPLEMENT = str.maketrans("ACGT", "TGCA")


def simulate(workdir: Path, rng: np.random.Generator) -> tuple[Path, Path]:
    exons = ["".join(rng.choice(list("ACGT"), size=length)) for length in EXON_LENGTHS]
    sequences = {name: "".join(exons[e] for e in parts) for name, parts in TRANSCRIPTS.items()}
    fasta = workdir / "transcripts.fa"
    fasta.write_text("".join(f">{name}\n{seq}\n" for name, seq in sequences.items()))
    names = list(TRANSCRIPTS)
    # Reads per transcript in proportion to share x length (a read samples a position), as kallisto's model has it.
    weights = np.array([TRUE_SHARES[n] * len(sequences[n]) for n in names])
    chosen = rng.choice(len(names), size=N_READS, p=weights / weights.sum())
    lines = []
    for i, t in enumerate(chosen):
        seq = sequences[names[t]]
        fragment = int(np.clip(round(rng.normal(FRAGMENT_MEAN, FRAGMENT_SD)), READ_LENGTH, len(seq)))
        start = int(rng.integers(0, len(seq) - fragment + 1))
        piece = seq[start : start + fragment]
        read = piece[:READ_LENGTH] if rng.random() < 0.5 else piece[::-1].translate(_COMPLEMENT)[:READ_LENGTH]
        lines.append(f"@r{i}\n{read}\n+\n{'I' * READ_LENGTH}\n")
    reads = workdir / "reads.fq"
    reads.write_text("".join(lines))
    return fasta, reads


def run(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stderr


def main() -> None:
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fasta, reads = simulate(work, rng)
        index = work / "index.idx"
        run("kallisto", "index", "-k", str(K), "-i", str(index), str(fasta))
        single = ["--single", "-l", str(FRAGMENT_MEAN), "-s", str(FRAGMENT_SD)]
        # --single-overhang: quant then counts every read pseudo classes (it drops reads whose fragment would
        # overhang a transcript's end otherwise), so the classes below are exactly what quant's EM saw.
        quant = ["quant", "-i", str(index), "-o", str(work / "quant"), *single, "--single-overhang", "--plaintext"]
        log = run("kallisto", *quant, str(reads))
        run("kallisto", "pseudo", "-i", str(index), "-o", str(work / "pseudo"), *single, str(reads))
        abundance = [line.split("\t") for line in (work / "quant" / "abundance.tsv").read_text().splitlines()[1:]]
        names = [row[0] for row in abundance]
        # matrix.ec: "ec <tab> comma-separated target indices"; matrix.tsv (or pseudoalignments.tsv): "ec count".
        pseudo = work / "pseudo"
        ec_file = next(p for p in (pseudo / "pseudoalignments.ec", pseudo / "matrix.ec") if p.exists())
        tsv_file = next(p for p in (pseudo / "pseudoalignments.tsv", pseudo / "matrix.tsv") if p.exists())
        members = {
            int(ec): [int(t) for t in targets.split(",")]
            for ec, targets in (line.split("\t") for line in ec_file.read_text().splitlines())
        }
        counts: dict[int, int] = {}
        for line in tsv_file.read_text().splitlines():
            fields = line.split("\t")
            counts[int(fields[0])] = counts.get(int(fields[0]), 0) + int(float(fields[-1]))
        classes = [
            {"targets": [names[t] for t in members[ec]], "count": count}
            for ec, count in sorted(counts.items())
            if count > 0
        ]
        version = subprocess.run(["kallisto", "version"], check=True, capture_output=True, text=True).stdout.strip()
        reference = {
            "kallisto_version": version,
            "made_by": "tests/reference/kallisto_abundances.py",
            "seed": SEED,
            "n_reads_simulated": N_READS,
            "true_shares": TRUE_SHARES,
            "quant_log": [line for line in log.splitlines() if line.strip()],
            "targets": [{"name": row[0], "length": int(row[1]), "eff_length": float(row[2])} for row in abundance],
            "classes": classes,
            "est_counts": [float(row[3]) for row in abundance],
            "tpm": [float(row[4]) for row in abundance],
        }
    OUT.write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {OUT}: {len(classes)} classes, {sum(c['count'] for c in classes)} reads")


if __name__ == "__main__":
    main()
