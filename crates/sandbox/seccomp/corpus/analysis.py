# What most jobs do: load trades, aggregate, print tables and return one.
df = load_trades(days=None)
daily = df.set_index("timestamp").groupby("exchange")["amount"].resample("1D").sum()
by = df.groupby(["exchange", "side"]).agg(n=("amount", "size"), volume=("amount", "sum"))
pivot = df.pivot_table(index="symbol", columns="side", values="amount", aggfunc="sum")
rolling = df.set_index("timestamp")["price"].rolling("1h").mean()
merged = by.reset_index().merge(by.reset_index(), on="exchange", suffixes=("_a", "_b"))
print(df.describe(include="all").T.head(20))
print(by)
print(pivot.fillna(0).round(2).head())
print(len(daily), len(rolling), len(merged))
x = np.random.default_rng(0).normal(size=(400, 400))
print(float(np.linalg.svd(x, compute_uv=False)[0]) > 0, float(np.linalg.inv(x @ x.T + np.eye(400))[0, 0]))
big = np.zeros(1, dtype=np.float64)
for n in range(12):  # grows through realloc of large blocks
    big = np.resize(big, 1 << (n + 10))
print(big.nbytes)
print("\n".join(f"line {i}" for i in range(2000)))
result = by
