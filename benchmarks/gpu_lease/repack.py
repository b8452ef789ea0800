"""Re-zip wheels with ZIP_STORED (same members, same order, same RECORD) so xz sees raw bytes."""

import sys
import zipfile
from pathlib import Path

out = Path(sys.argv[1])
for src in sys.argv[2:]:
    dst = out / Path(src).name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
    print(dst.name, dst.stat().st_size)
