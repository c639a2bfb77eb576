#!/usr/bin/env python3
"""Write the batch-transform input of docs/transform.md: scikit-learn's 1,797 handwritten digits
(the data examples/digits/train.py trains on) as CSV rows of 64 pixel values in [0, 1], in two
files of 1,000 and 797 rows; with --s3, also put them under an S3 prefix for `deploy transform`.

    python examples/digits/batch_input.py digits-batch/
    python examples/digits/batch_input.py digits-batch/ --s3 s3://my-bucket/batch/in/

--s3 uses boto3 with the usual region and credentials (AWS_ENDPOINT_URL is honoured, as by
`deploy`) and creates the bucket if it does not exist yet.
"""
import argparse
from pathlib import Path

from sklearn.datasets import load_digits

ROWS_PER_FILE = 1000


def write_csv(out: Path) -> list[Path]:
    images = load_digits().data / 16.0      # 8x8 pixels, 0..16 in the data set
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for number, start in enumerate(range(0, len(images), ROWS_PER_FILE)):
        path = out / f"part-{number}.csv"
        rows = images[start:start + ROWS_PER_FILE]
        path.write_text("".join(",".join(f"{v:g}" for v in row) + "\n" for row in rows))
        print(f"wrote {path} ({len(rows):,} rows)")
        files.append(path)
    return files


def upload(files: list[Path], uri: str) -> None:
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    s3 = boto3.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except s3.exceptions.ClientError:
        region = s3.meta.region_name
        s3.create_bucket(Bucket=bucket, **({} if region == "us-east-1" else
                                           {"CreateBucketConfiguration": {"LocationConstraint": region}}))
        print(f"created bucket s3://{bucket}")
    for path in files:
        s3.upload_file(str(path), bucket, prefix + path.name)
        print(f"uploaded {path} -> s3://{bucket}/{prefix}{path.name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for part-0.csv and part-1.csv")
    ap.add_argument("--s3", metavar="s3://BUCKET/PREFIX/", help="also upload the files under this prefix")
    args = ap.parse_args()
    if args.s3 and not args.s3.startswith("s3://"):
        ap.error(f"--s3 {args.s3!r} is not an s3://BUCKET/PREFIX/ URI")
    files = write_csv(args.out)
    if args.s3:
        upload(files, args.s3)


if __name__ == "__main__":
    main()
