"""Packaging: `pip install .` installs the `tornado-records` command with records.yaml and static/ inside."""

import re
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "tornado_records" / "__init__.py").read_text()).group(1)


class BuildWithData(build_py):
    """Copy records.yaml and static/ into the package (as tornado_records/_data/) so an install finds them."""

    def run(self) -> None:
        super().run()
        data = Path(self.build_lib) / "tornado_records" / "_data"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        shutil.copy2(HERE / "records.yaml", data / "records.yaml")
        shutil.copytree(HERE / "static", data / "static")


setup(
    name="tornado-records",
    version=VERSION,
    description="Store and serve the audio recordings of a radio station's broadcasts over HTTP",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=["tornado_records", "tornado_records.handlers"],
    install_requires=["tornado>=6.5,<7", "PyYAML>=6,<7"],
    extras_require={"test": ["pytest>=8,<10", "pytest-tornado==0.8.1"]},
    entry_points={"console_scripts": ["tornado-records = tornado_records.cli:main"]},
    cmdclass={"build_py": BuildWithData},
)
