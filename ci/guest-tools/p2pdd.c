// SPDX-License-Identifier: GPL-2.0
/*
 * p2pdd: a dd-like copy between two block devices with O_DIRECT, through
 * either an mmap of a PCI device's P2P memory (p2pmem/allocate, the
 * user-space P2PDMA path) or an ordinary buffer in system memory. It stands
 * for a third-party tool under `p2pnvme run --prove`.
 *
 * Usage: p2pdd SRC SRC_OFF DST DST_OFF LEN BUF
 *   BUF: "ram", or the PCI address of a P2P memory provider.
 * Offsets and LEN in bytes, multiples of 4096.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define CHUNK (1024UL * 1024)

static void *get_buffer(const char *buf, size_t len)
{
	char path[256];
	void *p;
	int fd;

	if (!strcmp(buf, "ram")) {
		if (posix_memalign(&p, 4096, len))
			return NULL;
		return p;
	}
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/allocate", buf);
	fd = open(path, O_RDWR);
	if (fd < 0) {
		fprintf(stderr, "p2pdd: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED) {
		fprintf(stderr, "p2pdd: mmap %s: %s\n", path, strerror(errno));
		return NULL;
	}
	return p;
}

int main(int argc, char **argv)
{
	unsigned long long soff, doff, len, done;
	int in, out;
	char *p;

	if (argc != 7) {
		fprintf(stderr, "usage: p2pdd SRC SRC_OFF DST DST_OFF LEN ram|PCI_BDF\n");
		return 2;
	}
	soff = strtoull(argv[2], NULL, 0);
	doff = strtoull(argv[4], NULL, 0);
	len = strtoull(argv[5], NULL, 0);
	in = open(argv[1], O_RDONLY | O_DIRECT);
	out = open(argv[3], O_WRONLY | O_DIRECT);
	if (in < 0 || out < 0) {
		perror("p2pdd: open");
		return 1;
	}
	p = get_buffer(argv[6], CHUNK);
	if (!p)
		return 1;
	for (done = 0; done < len; done += CHUNK) {
		size_t n = len - done < CHUNK ? len - done : CHUNK;

		if (pread(in, p, n, soff + done) != (ssize_t)n ||
		    pwrite(out, p, n, doff + done) != (ssize_t)n) {
			fprintf(stderr, "p2pdd: I/O at %llu: %s\n", done, strerror(errno));
			return 1;
		}
	}
	if (fsync(out)) {
		perror("p2pdd: fsync");
		return 1;
	}
	printf("p2pdd: %llu bytes via %s\n", len, argv[6]);
	return 0;
}
