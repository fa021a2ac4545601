// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin for ci/bench/boot-blocks: records every translation
 * block QEMU translates (host wall clock in ns, guest virtual address) and
 * writes them, one per line, to the file named by its out= argument when
 * QEMU exits. Under TCG a guest's boot is bound by translation (each block
 * is translated once, then reused), so the count of blocks translated before
 * the command starts measures how much distinct code a boot runs.
 *
 * QEMU 11.1's plugin API 7, its functions looked up in the running QEMU by
 * name; the signatures are the ones the witness plugin (qemu-device/witness)
 * was checked against.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct qemu_plugin_tb;

static void (*register_tb_trans)(uint64_t id,
		void (*cb)(struct qemu_plugin_tb *tb, void *udata), void *udata);
static void (*register_atexit)(uint64_t id, void (*cb)(void *udata),
		void *udata);
static uint64_t (*tb_vaddr)(const struct qemu_plugin_tb *tb);

__attribute__((visibility("default"))) int qemu_plugin_version = 7;

struct block {
	uint64_t ns;
	uint64_t vaddr;
};

static struct block *blocks;
static size_t len, cap;
static const char *out_path;
static int lost;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* With --tcg-threads multi, vCPU threads translate concurrently. */
static void on_translate(struct qemu_plugin_tb *tb, void *udata)
{
	struct timespec t;

	pthread_mutex_lock(&lock);
	if (len == cap) {
		size_t want = cap ? cap * 2 : 1 << 16;
		struct block *grown = realloc(blocks, want * sizeof(*blocks));

		if (!grown) {
			lost = 1;
			pthread_mutex_unlock(&lock);
			return;
		}
		blocks = grown;
		cap = want;
	}
	clock_gettime(CLOCK_REALTIME, &t);
	blocks[len].ns = (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
	blocks[len].vaddr = tb_vaddr(tb);
	len++;
	pthread_mutex_unlock(&lock);
}

static void on_exit_write(void *udata)
{
	FILE *f = fopen(out_path, "w");
	size_t i;

	if (!f) {
		perror(out_path);
		return;
	}
	if (lost)
		fprintf(f, "# lost blocks: out of memory\n");
	for (i = 0; i < len; i++)
		fprintf(f, "%llu %llx\n", (unsigned long long)blocks[i].ns,
			(unsigned long long)blocks[i].vaddr);
	fclose(f);
}

__attribute__((visibility("default")))
int qemu_plugin_install(uint64_t id, const void *info, int argc, char **argv)
{
	int i;

	for (i = 0; i < argc; i++)
		if (!strncmp(argv[i], "out=", 4))
			out_path = argv[i] + 4;
	if (!out_path) {
		fprintf(stderr, "tb-count: give the output file: -plugin tb-count.so,out=PATH\n");
		return -1;
	}
	register_tb_trans = dlsym(RTLD_DEFAULT,
				  "qemu_plugin_register_vcpu_tb_trans_cb");
	register_atexit = dlsym(RTLD_DEFAULT, "qemu_plugin_register_atexit_cb");
	tb_vaddr = dlsym(RTLD_DEFAULT, "qemu_plugin_tb_vaddr");
	if (!register_tb_trans || !register_atexit || !tb_vaddr) {
		fprintf(stderr, "tb-count: this QEMU lacks plugin API 7's functions\n");
		return -1;
	}
	register_tb_trans(id, on_translate, NULL);
	register_atexit(id, on_exit_write, NULL);
	return 0;
}
