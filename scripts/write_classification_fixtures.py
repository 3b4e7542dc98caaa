#!/usr/bin/env python
"""Write sandbox scenes in the four classification datasets' official layouts and print the commands
that run the classification experiments on them offline with the sandbox CLIP.

    python scripts/write_classification_fixtures.py /tmp/cls-fixtures --images 60
"""
from __future__ import annotations

import argparse
from pathlib import Path

from falip.sandbox.classification_layouts import (write_cub_layout, write_imagenet_s_layout,
                                                  write_stanford_dogs_layout, write_waterbirds_layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    write_cub_layout(out / "cub", seed=args.seed, images=args.images)
    write_stanford_dogs_layout(out / "dogs", seed=args.seed, images=args.images)
    write_imagenet_s_layout(out / "ins", seed=args.seed, images=args.images, empty_mask_every=13)
    write_waterbirds_layout(out / "wb", out / "wbcub", seed=args.seed, images=args.images + args.images % 4 + 4)
    common = f"model=sandbox run.output_dir={out / 'results'}"
    print("\n".join([
        f"falip-run experiment=cub_cls {common} dataset.root={out / 'cub'}",
        f"falip-run experiment=stanford_dogs_cls {common} dataset.root={out / 'dogs'}",
        f"falip-run experiment=imagenet_s_cls {common} dataset.root={out / 'ins'} dataset.variant=50 "
        f"dataset.categories={out / 'ins' / 'categories.txt'} dataset.classnames={out / 'ins' / 'classnames.txt'} "
        f"run.skip_bad_samples=true",
        f"falip-run experiment=waterbirds_cls {common} dataset.root={out / 'wb'} dataset.cub_root={out / 'wbcub'} "
        f"dataset.classnames={out / 'wb' / 'classnames.txt'}",
        f"falip-run experiment=cls_table run.output_dir={out / 'results'}"]))


if __name__ == "__main__":
    main()
