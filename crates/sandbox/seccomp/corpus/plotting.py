# Figures: the runner collects open figures as PNG; a job may also save its own.
import io
df = load_trades(days=None)
fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6))
df.set_index("timestamp")["price"].plot(ax=a, title="price")
df.groupby("exchange")["amount"].sum().plot.bar(ax=b)
fig.tight_layout()
buf = io.BytesIO()
fig.savefig(buf, format="png")
fig.savefig("/tmp/figure.png", dpi=50)
fig.savefig("/tmp/figure.svg")
assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
plt.figure()
plt.hist(df["amount"], bins=50)
plt.text(0.5, 0.5, "unicode: \u20ac \u00e9 \u2192")
