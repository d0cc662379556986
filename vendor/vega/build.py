"""Rebuild ``template.html``, the page ``dvc plots show`` / ``dvc plots diff`` write (set as
``plots.html_template`` in ``.dvc/config``), with vega, vega-lite and vega-embed inlined so the
page draws its plots offline. The three packages come from the npm registry at pinned versions,
each checked against the registry's sha512 integrity; their licence files are written next to it,
and ``SHA256SUMS`` holds the sha256 of each script as inlined.

    python vendor/vega/build.py          # needs registry.npmjs.org once; the result is committed
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGISTRY = "https://registry.npmjs.org"
# name, version, npm integrity (sha512), script in the tarball, licence file in the tarball.
# The `vega` package ships no LICENSE file: its text is taken from vega-view, a package of the
# same repository (vega/vega) and licence that the vega bundle contains.
PACKAGES = [
    ("vega", "5.33.1", "1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw==",
     "package/build/vega.min.js", None),
    ("vega-view", "5.16.1", "YyG4i2JDkRCacHd9xNAwyov2cELxwzPGY224PA2o0gEhkoOjPkVElTmo9QHJvKeVxMoyad6wvoq+Jj+TB6zhLw==",
     None, ("package/LICENSE", "LICENSE-vega")),
    ("vega-lite", "5.23.0", "l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA==",
     "package/build/vega-lite.min.js", ("package/LICENSE", "LICENSE-vega-lite")),
    ("vega-embed", "6.29.0", "PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q==",
     "package/build/vega-embed.min.js", ("package/LICENSE", "LICENSE-vega-embed")),
]

# DVC (dvc-render 1.0.2) replaces the placeholders {plot_divs} (required) and {refresh_tag} with
# str.replace; {scripts}, its CDN <script> tags, is left out on purpose.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>bao-wsss plots</title>
    <!-- {versions}: inlined from the npm registry by vendor/vega/build.py, so this page needs no network. -->
{inline_scripts}
    <style>
        body { font-family: sans-serif; margin: 16px; }
        table { border-spacing: 15px; }
        body > div { margin-bottom: 24px; }
        img { max-width: 100%; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


PLACEHOLDERS = ("{plot_divs}", "{refresh_tag}", "{scripts}")


def fetch(name: str, version: str, integrity: str) -> tarfile.TarFile:
    url = f"{REGISTRY}/{name}/-/{name}-{version}.tgz"
    data = urllib.request.urlopen(url, timeout=60).read()
    digest = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if digest != integrity:
        raise SystemExit(f"{url}: sha512 {digest} differs from the pinned {integrity}")
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")


def main() -> None:
    scripts, versions, sums = [], [], []
    for name, version, integrity, script, licence in PACKAGES:
        with fetch(name, version, integrity) as tar:
            if script:
                code = tar.extractfile(script).read().decode("utf-8")
                code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", code)  # no map to look for
                if "</script" in code.lower():
                    raise SystemExit(f"{name}: '</script' inside the code cannot be inlined")
                if any(placeholder in code for placeholder in PLACEHOLDERS):
                    raise SystemExit(f"{name}: the code holds a DVC placeholder {PLACEHOLDERS}")
                scripts.append(f"    <script>/* {name}@{version} ({REGISTRY}) */\n{code}\n    </script>")
                versions.append(f"{name}@{version}")
                sums.append(f"{hashlib.sha256(code.encode()).hexdigest()}  {name}@{version}\n")
            if licence:
                member, out = licence
                (HERE / out).write_bytes(tar.extractfile(member).read())
    page = PAGE.replace("{versions}", ", ".join(versions)).replace("{inline_scripts}", "\n".join(scripts))
    (HERE / "template.html").write_text(page, encoding="utf-8")
    # the sha256 of each script as inlined, so a test can find it unchanged in the page DVC writes
    (HERE / "SHA256SUMS").write_text("".join(sums), encoding="utf-8")


if __name__ == "__main__":
    main()
