"""``onepixel preprocess-tupac SRC -o DIR``: TUPAC16 mitosis data -> train/val patch folders."""

from __future__ import annotations

import argparse

from onepixel.cli import options as o


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from onepixel.datasets.tupac import TupacConfig

    def field(name: str) -> tuple[type, str]:
        return (TupacConfig, name)

    parser.add_argument("src", metavar="SRC",
                        help="folder with mitoses_image_data/<case>/<region>.tif and "
                             "mitoses_ground_truth/<case>/<region>.csv")
    g = o.output_group(parser)
    o.add_out(g, metavar="DIR", required=True,
              help="output folder: {train,val}/{mitosis,normal}/*.png, preprocess.json")
    o.add_overwrite(g)
    o.add_progress(g)
    g = parser.add_argument_group("patches")
    o.add(g, "--size", type=int, field=field("patch_size"),
          help="patch side in pixels (default: %(default)s)")
    o.add(g, "--val-fraction", type=float, field=field("val_fraction"),
          help="fraction of the cases put in val (default: %(default)s)")
    o.add(g, "--val-cases", type=o.name_list, field=field("val_cases"), metavar="CASE,...",
          help="exactly these cases in val (overrides --val-fraction)")
    o.add_seed(g, TupacConfig, what=" of the split, shifts and sampling")
    o.add(g, "--rotations", type=int, field=field("rotations"),
          help="rotated copies per mitosis, evenly spaced angles (default: %(default)s; "
               "3 = 90/180/270)")
    o.add(g, "--shifts", type=int, field=field("shifts"),
          help="randomly shifted copies per mitosis (default: %(default)s)")
    o.add(g, "--max-shift", type=int, field=field("max_shift"),
          help="largest shift in pixels (default: size/4)")
    o.add(g, "--normal-stride", type=int, field=field("normal_stride"),
          help="step of the normal-patch grid (default: --size)")
    o.add(g, "--exclusion-radius", type=float, field=field("exclusion_radius"),
          help="normal patches keep every pixel this far from every mitosis "
               "(default: size/2; 0 disables)")
    o.add(g, "--normal-fraction", type=float, field=field("normal_fraction"),
          help="probability of keeping each eligible normal patch (default: %(default)s)")
    o.add(g, "--normal-tissue-threshold", type=float, field=field("normal_tissue_threshold"),
          help="minimum tissue fraction of a normal patch (default: %(default)s, keep all)")
    o.add(g, "--border", choices=["reflect", "skip"], field=field("border"),
          help="mitosis patches reaching outside the image: mirror-pad or skip "
               "(default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    from onepixel.datasets.tupac import TupacConfig, preprocess_tupac

    config = TupacConfig(patch_size=args.size, val_fraction=args.val_fraction,
                         val_cases=args.val_cases or None, seed=args.seed,
                         rotations=args.rotations, shifts=args.shifts, max_shift=args.max_shift,
                         normal_stride=args.normal_stride, exclusion_radius=args.exclusion_radius,
                         normal_fraction=args.normal_fraction,
                         normal_tissue_threshold=args.normal_tissue_threshold,
                         border=args.border, overwrite=args.overwrite)
    result = preprocess_tupac(args.src, args.out, config, progress=not args.no_progress)
    for split, cases in (("train", result.train_cases), ("val", result.val_cases)):
        counts = result.counts[split]
        print(f"{split}: {len(cases)} cases, {counts['mitosis']} mitosis and {counts['normal']} "
              f"normal patches")
    # preprocess_tupac logs "wrote OUT: ...": said once.
    return 0
