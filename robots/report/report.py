"""Sales report: read a CSV of sales lines, summarise revenue by region,
product and month, and write report.html and report.xlsx into the
artifacts directory ($ROBOT_ARTIFACTS, else ./output)."""

import html
import os
import sys

import pandas as pd


def load(path):
    df = pd.read_csv(path, parse_dates=["date"])
    missing = {"date", "region", "product", "units", "unit_price"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: missing columns {sorted(missing)}")
    df["revenue"] = df["units"] * df["unit_price"]
    df["month"] = df["date"].dt.to_period("M").astype(str)
    return df


def summarise(df):
    by_region = (
        df.groupby("region", as_index=False)
        .agg(orders=("units", "size"), units=("units", "sum"), revenue=("revenue", "sum"))
        .sort_values("revenue", ascending=False)
    )
    by_product = (
        df.groupby("product", as_index=False)
        .agg(units=("units", "sum"), revenue=("revenue", "sum"))
        .sort_values("revenue", ascending=False)
    )
    by_month = df.pivot_table(index="month", columns="region", values="revenue", aggfunc="sum", fill_value=0)
    by_month["Total"] = by_month.sum(axis=1)
    return by_region, by_product, by_month


def write_html(path, source, df, by_region, by_product, by_month):
    fmt = {"revenue": "{:,.2f}".format}
    total = df["revenue"].sum()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Sales report</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}th{background:#eee}</style></head><body>",
        f"<h1>Sales report</h1><p>Source: {html.escape(source)} &middot; {len(df)} lines "
        f"&middot; {df['date'].min():%Y-%m-%d} to {df['date'].max():%Y-%m-%d} "
        f"&middot; total revenue <b>{total:,.2f}</b></p>",
        "<h2>By region</h2>",
        by_region.to_html(index=False, formatters=fmt),
        "<h2>By product</h2>",
        by_product.to_html(index=False, formatters=fmt),
        "<h2>Revenue by month</h2>",
        by_month.to_html(float_format="{:,.2f}".format),
        "</body></html>",
    ]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))


def main(argv):
    source = argv[1] if len(argv) > 1 else "data/sales.csv"
    out = os.environ.get("ROBOT_ARTIFACTS") or "output"
    os.makedirs(out, exist_ok=True)
    df = load(source)
    by_region, by_product, by_month = summarise(df)
    html_path = os.path.join(out, "report.html")
    xlsx_path = os.path.join(out, "report.xlsx")
    write_html(html_path, source, df, by_region, by_product, by_month)
    with pd.ExcelWriter(xlsx_path, engine="openpyxl") as xl:
        by_region.to_excel(xl, sheet_name="By region", index=False)
        by_product.to_excel(xl, sheet_name="By product", index=False)
        by_month.to_excel(xl, sheet_name="By month")
        df.drop(columns=["month"]).to_excel(xl, sheet_name="Data", index=False)
    print(f"{len(df)} sales lines, total revenue {df['revenue'].sum():,.2f}")
    print(by_region.to_string(index=False))
    print(f"wrote {html_path}")
    print(f"wrote {xlsx_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
